"""Loading, readiness, failures and reloads of the engine, and that the event loop never blocks."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.engine.backend import CloverBackend
from service.main import create_app


class GatedBackend(CloverBackend):
    """The real backend, but model loading waits for a gate, so a test can look at the server mid-load."""

    def __init__(self, inner) -> None:
        self.inner = inner or CloverBackend()
        self.gate = threading.Event()

    def load_model(self, checkpoint, device):
        assert self.gate.wait(30)
        return self.inner.load_model(checkpoint, device)

    def open_reader(self, index_dir, fingerprint, db_url):
        return self.inner.open_reader(index_dir, fingerprint, db_url)


def _settings(world, **kw):
    return Settings(index_dir=world.index_dir, checkpoint=world.checkpoint, library_roots=[world.library], **kw)


def test_readyz_is_503_while_loading_then_200(world):
    backend = GatedBackend(world.backend)
    with TestClient(create_app(_settings(world), backend=backend)) as client:
        assert client.get("/healthz").status_code == 200
        loading = client.get("/readyz")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        busy = client.get("/search", params={"q": "x"})
        assert busy.status_code == 503 and "loading" in busy.json()["detail"]
        backend.gate.set()
        client.portal.call(client.app.state.engine.wait_loaded)
        assert client.get("/readyz").status_code == 200
        assert client.get("/search", params={"q": "x"}).status_code == 200


def test_a_checkpoint_that_cannot_load_leaves_the_server_up_but_not_ready(world, tmp_path):
    settings = Settings(index_dir=world.index_dir, checkpoint=tmp_path / "no-such-checkpoint",
                        load_in_background=False)
    with TestClient(create_app(settings, backend=world.backend)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        assert "could not be loaded" in client.get("/search", params={"q": "x"}).json()["detail"]
        assert client.post("/admin/reload").status_code == 503


def test_slow_inference_never_blocks_the_event_loop(world):
    """While a query sits inside encode_text, the event loop still answers other requests at once."""
    with TestClient(create_app(_settings(world, load_in_background=False), backend=world.backend)) as client:
        model = client.app.state.engine.model
        original = model.encode_text
        entered, release = threading.Event(), threading.Event()

        def held_encode_text(*args, **kwargs):
            entered.set()
            release.wait(10)  # if the loop were blocked, /healthz below would wait these 10 s
            return original(*args, **kwargs)

        model.encode_text = held_encode_text
        statuses = []
        search = threading.Thread(target=lambda: statuses.append(
            client.get("/search", params={"q": "held query"}).status_code))
        try:
            search.start()
            assert entered.wait(10)
            t0 = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 200
            assert time.perf_counter() - t0 < 2.0
        finally:
            release.set()
            search.join()
            del model.encode_text
        assert statuses == [200]


@pytest.mark.parametrize("origin_allowed", [True, False])
def test_cors_is_configurable(world, origin_allowed):
    origins = ["http://app.example"] if origin_allowed else []
    with TestClient(create_app(_settings(world, cors_origins=origins, load_in_background=False),
                               backend=world.backend)) as client:
        response = client.get("/healthz", headers={"Origin": "http://app.example"})
        assert (response.headers.get("access-control-allow-origin") == "http://app.example") is origin_allowed


def test_without_an_index_admin_can_build_one(world, tmp_path):
    settings = Settings(index_dir=tmp_path / "fresh-index", checkpoint=world.checkpoint,
                        library_roots=[world.library], load_in_background=False, index_workers=0)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "no_index"
        assert "no index.json" in ready.json()["detail"]
        assert client.get("/search", params={"q": "x"}).status_code == 503
        job = client.post("/videos", json={"path": world.videos[0].name}).json()
        deadline = time.monotonic() + 60
        while client.get(job["url"]).json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.get(job["url"]).json()["status"] == "succeeded"
        assert client.get("/readyz").status_code == 200
        results = client.get("/search", params={"q": "x"}).json()["results"]
        assert [Path(r["path"]).name for r in results] == [world.videos[0].name]


def test_a_failed_reload_keeps_serving_the_previous_index(world, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(world.index_dir, index_dir)
    settings = Settings(index_dir=index_dir, checkpoint=world.checkpoint, load_in_background=False)
    with TestClient(create_app(settings)) as client:
        manifest = index_dir / "index.json"
        good = manifest.read_bytes()
        manifest.write_text("{ not json")
        failed = client.post("/admin/reload")
        assert failed.status_code == 409 and "still serving the previous index" in failed.json()["detail"]
        assert client.get("/readyz").status_code == 200
        assert len(client.get("/search", params={"q": "x"}).json()["results"]) == 5
        manifest.write_bytes(good)
        assert client.post("/admin/reload").json()["generation"] == 2


def test_open_ended_qa_without_a_qa_head_is_a_clear_409(world):
    with TestClient(create_app(_settings(world, load_in_background=False))) as client:
        client.app.state.engine.model.answer_vocab = []
        response = client.post("/qa", json={"video_id": 1, "question": "what?"})
        assert response.status_code == 409 and "no open-ended QA head" in response.json()["detail"]
        choice = client.post("/qa", json={"video_id": 1, "question": "what?", "candidates": ["a", "b"]})
        assert choice.status_code == 200
