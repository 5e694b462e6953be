"""The request body cap (catalog.middleware): a body over REQUEST_MAX_BYTES is refused with 413
before it is read, by Django's test client and by a real gunicorn."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from django.test import Client
from pytest_django import Settings

from catalog.middleware import LENGTH_REQUIRED, REQUEST_TOO_LARGE
from catalog.models import ListingImage
from dev.embedded import free_port
from tests.api_errors import api_error
from tests.conftest import REPO_ROOT
from tests.factories import UserFactory

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

PASSWORD = "a-long-test-password"


class _Unreadable(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the body was read")

    def readline(self, size: int | None = -1) -> bytes:
        raise AssertionError("the body was read")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/classify", "/sell/new/", "/accounts/login/"])
def test_a_300_mb_body_gets_413_without_being_read(path: str, settings: Settings) -> None:
    # given a signed-in seller
    client = Client()
    client.force_login(UserFactory.create())
    files_before = ListingImage.objects.count()

    # when they announce 300 MB of multipart body
    environ: dict[str, Any] = {"wsgi.input": _Unreadable()}  # extra WSGI keys are untyped
    response = client.generic(
        "POST",
        path,
        CONTENT_TYPE="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(300 * 1024 * 1024),
        **environ,
    )

    # then it is refused before a byte is read or stored
    assert response.status_code == 413
    message = REQUEST_TOO_LARGE.format(limit_mb=settings.REQUEST_MAX_BYTES / 2**20)
    assert message in response.content.decode()
    assert ListingImage.objects.count() == files_before


def _chunked(client: Client, path: str, body: bytes, **extra: object) -> TestResponse:
    environ: dict[str, Any] = {"wsgi.input": io.BytesIO(body), **extra}  # extra WSGI keys are untyped
    return client.generic(
        "POST",
        path,
        CONTENT_TYPE="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
        **environ,
    )


@pytest.mark.django_db
def test_a_chunked_body_is_read_up_to_the_cap_only(settings: Settings) -> None:
    # given a 1 KiB cap, and a server that ends the input with the body (as gunicorn does)
    settings.REQUEST_MAX_BYTES = 1024
    UserFactory.create(username="tok")
    client = Client()
    terminated = {"wsgi.input_terminated": True}
    over = io.BytesIO(b"x" * 10_000)

    # when a chunked body over the cap is sent, then a small one
    refused = _chunked(client, "/api/token", b"", **{**terminated, "wsgi.input": over})
    small = _chunked(
        client, "/api/token", b'{"username": "tok", "password": "%s"}' % PASSWORD.encode(), **terminated
    )
    # and a chunked body to a server that cannot say where it ends
    unknown = _chunked(client, "/api/token", b"{}")

    # then the big one is refused having read one byte past the cap, the small one is parsed
    assert refused.status_code == 413 and over.tell() == 1025
    assert small.status_code == 200 and small.json()["token"]
    assert (unknown.status_code, unknown.json()) == (411, api_error("length_required", LENGTH_REQUIRED))


# --- a real server ----------------------------------------------------------------------------------

CAP = 1024 * 1024


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """gunicorn as docker/compose runs it (sync workers), with a 1 MiB cap; yields (host, port).
    Refusals never reach the database, so it needs none."""
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--timeout", "30"],
        cwd=REPO_ROOT, env={**os.environ, "REQUEST_MAX_BYTES": str(CAP)},
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    yield ("127.0.0.1", port)
    process.terminate()
    process.wait(30)


def _status_line(connection: socket.socket) -> str:
    connection.settimeout(20)
    answer = b""
    while b"\r\n" not in answer:
        block = connection.recv(4096)
        if not block:
            break
        answer += block
    return answer.split(b"\r\n", 1)[0].decode()


def test_gunicorn_answers_413_to_a_300_mb_upload_before_the_body_is_sent(
    gunicorn_url: tuple[str, int],
) -> None:
    # when a client sends only the headers of a 300 MB upload, and waits
    with socket.create_connection(gunicorn_url) as connection:
        connection.sendall(
            b"POST /api/classify HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: %d\r\n\r\n" % (300 * 1024 * 1024)
        )
        status = _status_line(connection)

    # then the answer is 413 although not one byte of the body was sent
    assert status == "HTTP/1.1 413 Request Entity Too Large"


def test_gunicorn_stops_reading_a_chunked_body_past_the_cap(gunicorn_url: tuple[str, int]) -> None:
    # when a client streams a chunked body past the cap, and waits (no final chunk). gunicorn reads
    # 1 KiB ahead of what it is asked for: the chunk holds exactly that much more, so every byte
    # sent is read and the server's close cannot reset the connection before the answer is read.
    with socket.create_connection(gunicorn_url) as connection:
        connection.sendall(
            b"POST /api/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        connection.sendall(b"%x\r\n" % (CAP + 1024) + b"x" * (CAP + 1024))
        status = _status_line(connection)

    # then it is refused as soon as the cap is passed
    assert status == "HTTP/1.1 413 Request Entity Too Large"
