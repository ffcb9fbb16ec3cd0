"""Security against a real server: keys, paths, sizes -- refused with the right status, nothing outside the roots read.

tests/service covers the basics (a few traversal strings, one symlinked file, declared oversized bodies, the key
on three routes). This extends them: every admin route of the OpenAPI schema and misplaced keys; symlinked
directories, directory adds holding links out of the roots, catalog rows pointing outside the roots (a tampered
or foreign catalog), raw-URL traversal, upload file names; chunked (undeclared) oversized bodies, huge URLs and
headers, pathological JSON. A "secret" directory outside every root is watched with inotify for the whole
module: any open of it or of a file in it, by the server or anything else, fails the test that caused it.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sqlite3
import struct
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.reliability.conftest import ADMIN_KEY, serve_copy
from tests.video_factory import write_video

MAX_UPLOAD = 200_000
MAX_BODY = 1024 * 1024


class OpenWatch:
    """inotify on one directory: reports every open / read of it or of the files in it (Linux only)."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, directory: Path) -> None:
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(self.fd, str(directory).encode(),
                                                      self.IN_OPEN | self.IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), "inotify is not available")

    def events(self) -> list[str]:
        """Events since the last call: 'open secret.mp4', 'open .' (the directory itself), 'read ...'."""
        found = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                _, mask, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode() or "."
                found.append(f"{'open' if mask & self.IN_OPEN else 'read'} {name}")
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture(scope="module")
def setup(world, tmp_path_factory):
    base = tmp_path_factory.mktemp("security")
    secret = (base / "secret").resolve()
    secret.mkdir()
    write_video(secret / "secret.mp4", num_frames=20, seed=7)
    (secret / "secret.jpg").write_bytes(b"\xff\xd8 not for you")
    (secret / "catalogued.mp4").write_bytes((secret / "secret.mp4").read_bytes())

    def prepare(index_dir: Path, extra: Path) -> None:
        (extra / "escape.mp4").symlink_to(secret / "secret.mp4")
        (extra / "escape_dir").symlink_to(secret)
        write_video(extra / "mixed" / "inside.mp4", num_frames=20, seed=8)
        (extra / "mixed" / "link.mp4").symlink_to(secret / "secret.mp4")
        # A catalog that names files outside the roots (tampered, or written for another machine's roots).
        with sqlite3.connect(index_dir / "catalog.sqlite") as db:
            first, second = [row[0] for row in db.execute("SELECT id FROM videos ORDER BY id LIMIT 2")]
            db.execute("UPDATE videos SET path = ? WHERE id = ?", (str(secret / "catalogued.mp4"), first))
            db.execute("UPDATE segments SET thumbnail = ? WHERE video_id = ?", (str(secret / "secret.jpg"), second))
            db.execute("UPDATE segments SET thumbnail = ? WHERE id = (SELECT min(id) FROM segments WHERE video_id = ?)",
                       ("../../secret/secret.jpg", first))
        prepare.tampered = (first, second)  # type: ignore[attr-defined]

    with serve_copy(world, base, prepare, CLOVER_MAX_UPLOAD_BYTES=str(MAX_UPLOAD)) as served:
        watch = OpenWatch(secret)
        (secret / "secret.jpg").read_bytes()
        assert "open secret.jpg" in watch.events()  # the watch sees opens here (else every check below is void)
        try:
            yield {"served": served, "secret": secret, "watch": watch, "tampered": prepare.tampered}
        finally:
            watch.close()


@pytest.fixture
def http(setup):
    with httpx.Client(base_url=setup["served"].url, timeout=60) as client:
        yield client
    opened = setup["watch"].events()
    assert not opened, f"files outside the library roots were opened: {opened}"
    assert httpx.get(f"{setup['served'].url}/healthz", timeout=10).status_code == 200  # and the server lives


def _admin(**headers: str) -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY, **headers}


def _wait_job(http: httpx.Client, url: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = http.get(url, headers=_admin()).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {url} did not finish")


def _raw_status(url: str, request_line_path: str, extra_headers: str = "") -> int:
    """Send a request exactly as written (clients normalise '..' away and refuse huge URLs); its status code."""
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as sock:
        request = f"GET {request_line_path} HTTP/1.1\r\nHost: x\r\n{extra_headers}Connection: close\r\n\r\n"
        sock.sendall(request.encode())
        head = sock.recv(4096).decode("latin-1")
    return int(head.split()[1])


# ---------------------------------------------------------------------------------------------- keys


def test_every_admin_route_refuses_missing_wrong_and_misplaced_keys(http, setup):
    schema = http.get("/openapi.json").json()
    routes = [(method.upper(), path.replace("{video_id}", "1").replace("{job_id}", "x"))
              for path, operations in schema["paths"].items()
              for method, operation in operations.items() if "admin" in operation.get("tags", [])]
    assert len(routes) >= 4, routes  # POST /videos, DELETE /videos/{id}, GET /jobs/{id}, POST /admin/reload
    variants = {
        "no key": ({}, {}, 401),
        "empty key": ({"X-API-Key": ""}, {}, 401),
        "wrong key": ({"X-API-Key": "nope"}, {}, 403),
        "key in another case": ({"X-API-Key": ADMIN_KEY.upper()}, {}, 403),
        "key one character short": ({"X-API-Key": ADMIN_KEY[:-1]}, {}, 403),
        "key as a bearer token": ({"Authorization": f"Bearer {ADMIN_KEY}"}, {}, 401),
        "key in the query string": ({}, {"api_key": ADMIN_KEY, "X-API-Key": ADMIN_KEY}, 401),
    }
    for method, path in routes:
        for name, (headers, params, status) in variants.items():
            response = http.request(method, path, headers=headers, params=params, json={"path": "inside.mp4"})
            assert response.status_code == status, (method, path, name, response.text)
            if status == 401:
                assert response.headers.get("www-authenticate") == "APIKey"
    upload = http.post("/videos", files={"file": ("x.mp4", b"\0" * 1000, "video/mp4")}, headers={"X-API-Key": "no"})
    assert upload.status_code == 403
    uploads = setup["served"].index_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())  # refused before a byte was stored


# ---------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(("path", "status"), [
    ("{secret}/secret.mp4", 403),              # absolute, outside every root
    ("{extra}/escape.mp4", 403),               # a symlink in a root to a file outside
    ("escape.mp4", 403),                       # the same, relative to a root
    ("escape_dir/secret.mp4", 403),            # through a symlinked directory
    ("escape_dir", 403),                       # the symlinked directory itself
    ("{extra}/../secret/secret.mp4", 400),     # dot-dot, even when it would resolve outside
    ("../secret/secret.mp4", 400),
    ("mixed/../../secret/secret.mp4", 400),
    ("/proc/self/environ", 403),
    ("/", 403),
    ("file:///etc/passwd", 404),               # not a URL scheme: a relative name that does not exist
    ("secret.mp4\u0000.mp4", 400),             # NUL byte
])
def test_paths_outside_the_roots_are_refused_and_never_opened(http, setup, path, status):
    raw = path.format(secret=setup["secret"], extra=setup["served"].extra)
    response = http.post("/videos", json={"path": raw}, headers=_admin())
    assert response.status_code == status, response.text
    if not raw.startswith(str(setup["secret"])):  # the refusal does not reveal where a link points either
        assert str(setup["secret"]) not in response.json()["detail"]


def test_adding_a_directory_skips_links_out_of_the_roots(http, setup):
    accepted = http.post("/videos", json={"path": "mixed"}, headers=_admin())
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["paths"] == [str(setup["served"].extra / "mixed" / "inside.mp4")]
    assert _wait_job(http, accepted.json()["url"])["status"] == "succeeded"
    paths = [v["path"] for v in http.get("/videos", params={"limit": 100}).json()["videos"]]
    assert str(setup["served"].extra / "mixed" / "inside.mp4") in paths
    assert not any(p.startswith(str(setup["secret"])) and p.endswith("secret.mp4") for p in paths)


def test_catalog_rows_outside_the_roots_are_not_served(http, setup):
    outside_video, outside_thumb = setup["tampered"]
    assert http.get(f"/videos/{outside_video}/stream").status_code == 403
    assert http.head(f"/videos/{outside_video}/stream").status_code == 403
    assert http.get(f"/videos/{outside_video}/stream", headers={"Range": "bytes=0-10"}).status_code == 403
    segments = http.get(f"/videos/{outside_thumb}").json()["segments"]
    for segment in segments:
        assert http.get(f"/videos/{outside_thumb}/thumbnail", params={"segment_id": segment["segment_id"]}
                        ).status_code == 403
    first = http.get(f"/videos/{outside_video}").json()["segments"][0]["segment_id"]
    assert http.get(f"/videos/{outside_video}/thumbnail", params={"segment_id": first}).status_code == 403
    # what the index cached is still searchable: no file is read for search or QA
    assert http.post("/qa", json={"video_id": outside_video, "question": "which side?",
                                  "candidates": ["left", "right"]}).status_code == 200


@pytest.mark.parametrize("target", [
    "/static/../../../etc/passwd",
    "/static/..%2f..%2fservice%2fmain.py",
    "/static/%2e%2e/%2e%2e/service/main.py",
    "/videos/..%2f..%2f..%2fetc%2fpasswd/stream",
    "/videos/1%2f..%2f..%2fsecret/stream",
    "/videos/1/thumbnail?segment_id=..%2f..%2fsecret.jpg",
])
def test_traversal_in_the_url_is_refused(http, setup, target):
    assert _raw_status(setup["served"].url, target) in (400, 404, 422)


def test_upload_names_cannot_leave_the_upload_directory(http, setup):
    video = write_video(setup["served"].extra / "upload_source.mp4", num_frames=20, seed=9).read_bytes()
    for name in ("../../secret/evil.mp4", "/tmp/evil.mp4", "..\\..\\evil.mp4", "e\u0000vil.mp4"):
        response = http.post("/videos", files={"file": (name, video, "video/mp4")}, headers=_admin())
        assert response.status_code == 202, (name, response.text)
        stored = Path(response.json()["paths"][0])
        assert stored.parent == (setup["served"].index_dir / "uploads").resolve(), stored
        assert _wait_job(http, response.json()["url"])["status"] == "succeeded"
    assert not setup["watch"].events()  # checked before the listing below opens the directory itself
    assert sorted(p.name for p in setup["secret"].iterdir()) == ["catalogued.mp4", "secret.jpg", "secret.mp4"]
    setup["watch"].events()
    assert not Path("/tmp/evil.mp4").exists()


# ---------------------------------------------------------------------------------------------- sizes


def _chunks(total: int, size: int = 64 * 1024):
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


def test_oversized_bodies_are_refused_even_without_a_declared_length(http, setup):
    # Chunked transfer: no Content-Length, the limit is enforced while the body streams in.
    search = http.post("/search", content=_chunks(2 * MAX_BODY), headers={"content-type": "application/json"})
    assert search.status_code == 413, search.text
    add = http.post("/videos", content=_chunks(2 * MAX_BODY), headers=_admin(**{"content-type": "application/json"}))
    assert add.status_code == 413, add.text
    boundary = "reliabilityboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()

    def multipart():
        yield head
        yield from _chunks(3 * MAX_UPLOAD)
        yield f"\r\n--{boundary}--\r\n".encode()

    upload = http.post("/videos", content=multipart(),
                       headers=_admin(**{"content-type": f"multipart/form-data; boundary={boundary}"}))
    assert upload.status_code == 413, upload.text
    uploads = setup["served"].index_dir / "uploads"
    assert not uploads.exists() or not [p for p in uploads.iterdir() if "big" in p.name]  # no partial file left


def test_oversized_queries_urls_and_headers_are_refused(http, setup):
    url = setup["served"].url
    assert http.get("/search", params={"q": "x" * 10_000}).status_code == 422
    assert 400 <= _raw_status(url, "/search?q=" + "x" * 200_000) < 500
    assert 400 <= _raw_status(url, "/search?q=x", f"X-Padding: {'y' * 200_000}\r\n") < 500
    assert 400 <= _raw_status(url, "/search?q=x", "".join(f"X-H{i}: 1\r\n" for i in range(20_000))) < 500
    many_params = http.get("/search?q=x&" + "&".join(f"p{i}=1" for i in range(5000)))
    assert many_params.status_code in (200, 400, 414, 431), many_params.status_code
    candidates = http.post("/qa", json={"video_id": 1, "question": "q", "candidates": ["a"] * 50_000})
    assert candidates.status_code == 422


@pytest.mark.parametrize(("body", "statuses"), [
    (b"[" * 200_000 + b"]" * 200_000, (400, 422)),                        # nesting deeper than any parser's stack
    (b'{"q": "x", "k": 1' + b"0" * 5000 + b"}", (400, 422)),              # an integer of 5,000 digits
    (b'{"q": "x", "k": 1e999999}', (400, 422)),                           # infinity
    (b'{"q": "' + b"\\ud800" * 1000 + b'"}', (200, 400, 422)),            # lone surrogates
    (json.dumps({"q": "x", "filters": {"metadata": {str(i): i for i in range(20_000)}}}).encode(), (200, 422)),
    (b'{"q": "x"' + b', "q": "y"' * 50_000 + b"}", (200, 400, 422)),      # 50,000 duplicate keys
])
def test_pathological_json_is_refused_without_a_5xx(http, body, statuses):
    assert len(body) <= MAX_BODY
    response = http.post("/search", content=body, headers={"content-type": "application/json"})
    assert response.status_code in statuses, (response.status_code, response.text[:300])
