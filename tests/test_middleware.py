"""`ReplicaWritesMiddleware`: on a read replica, writes go to the writer host (307) or get a clear 503."""

from __future__ import annotations

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from buckethead_django.engine import ReadOnlyError
from buckethead_django.middleware import ReplicaWritesMiddleware

REFUSED = ReadOnlyError("BucketHead is a read replica on this host.")


def view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("served")


def middleware(**buckethead: object) -> ReplicaWritesMiddleware:
    with override_settings(BUCKETHEAD=buckethead):
        return ReplicaWritesMiddleware(view)


def test_on_a_replica_unsafe_requests_are_sent_to_the_writer_with_their_method_and_body() -> None:
    on_replica = middleware(ROLE="replica", WRITER_URL="https://www.example.com/")
    response = on_replica(RequestFactory().post("/documents/?page=2", {"title": "x"}))
    assert response.status_code == 307, "307 makes the client repeat the POST, body and all"
    assert response["Location"] == "https://www.example.com/documents/?page=2"
    assert on_replica(RequestFactory().get("/documents/")).content == b"served", "reads are served here"


def test_a_read_whose_view_writes_is_sent_to_the_writer_too() -> None:
    on_replica = middleware(ROLE="replica", WRITER_URL="https://www.example.com")
    response = on_replica.process_exception(RequestFactory().get("/login/"), REFUSED)
    assert response is not None
    assert (response.status_code, response["Location"]) == (307, "https://www.example.com/login/")


def test_without_a_writer_url_a_write_is_refused_with_a_503_that_says_why() -> None:
    on_replica = middleware(ROLE="replica")
    assert on_replica(RequestFactory().post("/")).content == b"served", "the view decides; its write is refused"
    response = on_replica.process_exception(RequestFactory().post("/"), REFUSED)
    assert response is not None
    assert response.status_code == 503
    assert response["Retry-After"]
    assert b"read replica" in response.content
    assert b"writer host" in response.content


@pytest.mark.parametrize("buckethead", [{}, {"WRITER_URL": "https://www.example.com"}])
def test_on_the_writer_host_the_middleware_does_nothing(buckethead: dict[str, str]) -> None:
    on_writer = middleware(**buckethead)
    assert on_writer(RequestFactory().post("/")).content == b"served"
    assert on_writer.process_exception(RequestFactory().post("/"), REFUSED) is None
