"""`rare serve` bounds request headers (431) and bodies (413) and keeps serving; an upload named with a NUL
byte is a 4xx, not a 500; refusals never name the server's temp files (issue 25)."""

from __future__ import annotations

import httpx
import pytest

from rare.serve.app import FORM_OVERHEAD, MAX_HEADER_BYTES
from tests.fixtures.serve import LiveServer
from tests.test_serve_api import png


@pytest.fixture(scope="module")
def client(live_server: LiveServer):
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        yield c


def still_serving(client: httpx.Client) -> None:
    assert client.get("/info").status_code == 200


@pytest.mark.parametrize("size", [MAX_HEADER_BYTES + 1, 16 * 1024 * 1024])
def test_oversized_headers_are_431_and_the_server_keeps_serving(client: httpx.Client, size: int) -> None:
    r = client.get("/info", headers={"X-Big": "a" * size})
    assert r.status_code == 431 and r.json()["field"] == "headers"
    still_serving(client)


def test_headers_under_the_bound_pass(client: httpx.Client) -> None:
    assert client.get("/info", headers={"X-Big": "a" * (MAX_HEADER_BYTES // 2)}).status_code == 200


def test_a_body_over_the_cap_is_413_by_its_length(client: httpx.Client, live_server: LiveServer) -> None:
    cap = live_server.service.limits.max_upload_bytes + FORM_OVERHEAD
    r = client.post("/search", content=b"x" * (cap + 1), headers={"content-type": "application/octet-stream"})
    assert r.status_code == 413 and r.json() == {"detail": f"body: request body over {cap} bytes", "field": "body"}
    still_serving(client)


def test_a_streamed_body_over_the_cap_is_413(client: httpx.Client, live_server: LiveServer) -> None:
    """No Content-Length (chunked): counted as it arrives, refused once past the cap."""
    cap = live_server.service.limits.max_upload_bytes + FORM_OVERHEAD
    boundary = "b0undary"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
               "Content-Type: image/png\r\n\r\n").encode()
        for _ in range(cap // (1 << 20) + 2):
            yield b"x" * (1 << 20)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/search", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and r.json()["field"] == "body"
    still_serving(client)


def raw_upload(client: httpx.Client, filename: bytes, content: bytes) -> httpx.Response:
    """A multipart body written by hand: HTTP clients escape a NUL in a file name, a hostile one does not."""
    boundary = b"b0undary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="text"\r\n\r\nmake the circle blue\r\n'
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="task"\r\n\r\ntweakset_task7\r\n'
            b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="' + filename +
            b'"\r\nContent-Type: image/png\r\n\r\n' + content + b"\r\n--" + boundary + b"--\r\n")
    return client.post("/search", content=body,
                       headers={"content-type": "multipart/form-data; boundary=" + boundary.decode()})


@pytest.mark.parametrize("name", [b"a\x00.png", b"evil.\x00", b"x.png\x00/../../etc/passwd", b"tab\there.png"])
def test_an_upload_name_with_control_characters_is_a_4xx(client: httpx.Client, name: bytes) -> None:
    r = raw_upload(client, name, png())
    assert r.status_code == 422 and r.json()["field"] == "image", r.text
    assert "control characters" in r.json()["detail"]
    still_serving(client)


def test_a_plain_upload_name_still_works(client: httpx.Client) -> None:
    r = raw_upload(client, b"mine.png", png())
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("name", ["broken.png", "broken.thisisalongsuffix", "noext"])
def test_refusals_never_echo_server_temp_paths(client: httpx.Client, name: str) -> None:
    r = client.post("/search", data={"text": "a red circle"}, files={"image": (name, b"\x89PNG not really", "image/png")})
    assert r.status_code == 422 and r.json()["field"] == "image"
    detail = r.json()["detail"]
    assert name in detail and "rare-serve-" not in detail and "/tmp" not in detail, detail
