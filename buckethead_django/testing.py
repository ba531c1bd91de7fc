"""Helpers for the test suites of projects that use BucketHead.

Under a test runner the process's engine is already a throwaway one on a
temporary directory. `fresh_buckethead()` goes further and gives one block
(or one test) a brand-new, empty engine of its own.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import runtime
from .engine import BucketConfig, BucketSQLite


@contextlib.contextmanager
def fresh_buckethead(config: BucketConfig | None = None, **engine_kwargs: object) -> Iterator[BucketSQLite]:
    """Run the block with a new engine, on a host of its own, as the process's engine; stop it afterwards.

    Without ``config`` its bucket is a temporary directory too, removed
    afterwards, so no real bucket is ever touched. With ``config`` it
    restores what that bucket holds, as a new host would. Usable as a
    decorator too.
    """
    with contextlib.ExitStack() as stack:
        path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="buckethead-test-")))
        if config is None:
            config = BucketConfig.local(path / "bucket")
        engine_kwargs.setdefault("local_dir", path / "host")
        engine = runtime.throwaway_engine(config, **engine_kwargs)
        engine.start()
        stack.callback(engine.stop)
        yield stack.enter_context(runtime.use_engine(engine))
