"""Which generations were committed, told from their records: the rules of `lineage.uncommitted`."""

from __future__ import annotations

from buckethead_django.engine.lineage import generation_seq, uncommitted
from buckethead_django.engine.record import GENERATION, LABELLED, SnapshotRecord


def gen(seq: int, parent: int | None = None, *, tag: str = "0") -> SnapshotRecord:
    """A generation record with sequence ``seq`` whose parent is generation ``parent`` (by sequence)."""
    return SnapshotRecord(
        name=name(seq, tag),
        kind=GENERATION,
        created_at=float(seq),
        size=0,
        sha256="",
        chunks=(),
        seq=seq,
        parent=None if parent is None else name(parent),
    )


def name(seq: int, tag: str = "0") -> str:
    return f"{seq:010d}-{tag * 8}"


def test_names_carry_their_sequence_number() -> None:
    assert generation_seq(name(42)) == 42
    assert generation_seq("pre-restore-20261127T230437Z-1a2b") is None
    assert generation_seq("0000000042") is None


def test_a_chain_of_commits_is_all_committed() -> None:
    records = [gen(1), gen(2, 1), gen(3, 2)]
    assert uncommitted(records, records[-1]) == set()


def test_a_fenced_writers_flush_between_two_links_was_never_committed() -> None:
    # Writer A committed 5 and was paused while flushing 6; B claimed (skipping 6) and committed 7 after 5.
    fenced = gen(6, 5, tag="a")
    records = [gen(5, 4), fenced, gen(7, 5)]
    assert uncommitted(records, records[-1]) == {fenced.name}
    assert uncommitted(records, None) == {fenced.name}, "the parent links alone prove it, with no current record"


def test_a_flush_newer_than_the_current_generation_was_never_committed() -> None:
    # B claimed the bucket at 5 but has not flushed yet: A's late flush 6 is not current, and never will be.
    late = gen(6, 5, tag="a")
    current = gen(5, 4)
    assert uncommitted([gen(4), current, late], current) == {late.name}


def test_a_failed_attempt_that_shares_a_committed_number_was_never_committed() -> None:
    # One writer's flush 6 failed after writing its objects; its retry, also 6, was committed, then 7.
    failed = gen(6, 5, tag="f")
    records = [gen(5), failed, gen(6, 5), gen(7, 6)]
    assert uncommitted(records, records[-1]) == {failed.name}


def test_generations_older_than_the_known_history_are_taken_as_they_are() -> None:
    # Format-1 records name no parent: nothing proves them uncommitted.
    records = [gen(1), gen(2), gen(3)]
    assert uncommitted(records, records[-1]) == set()
    assert uncommitted([gen(1), gen(2), gen(3, 2)], gen(3, 2)) == set()


def test_a_missing_record_in_the_chain_still_leaves_its_gap_provable() -> None:
    fenced = gen(8, 7, tag="a")
    current = gen(9, 7)
    assert uncommitted([gen(6), fenced, current], current) == {fenced.name}, "7's record is gone; 9's link remains"


def test_labels_are_never_judged() -> None:
    label = SnapshotRecord(name="before-migration", kind=LABELLED, created_at=0.0, size=0, sha256="", chunks=(), seq=6)
    assert uncommitted([gen(5), label, gen(7, 5)], gen(7, 5)) == set()
