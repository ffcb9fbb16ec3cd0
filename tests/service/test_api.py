"""The HTTP API through TestClient, against the real model and index (one app per module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.main import create_app

API_KEY = "test-admin-key"


@pytest.fixture(scope="module")
def client(world):
    settings = Settings(index_dir=world.index_dir, checkpoint=world.checkpoint, library_roots=[world.library],
                        api_key=API_KEY, load_in_background=False, max_k=50, max_upload_bytes=200_000,
                        index_workers=0)
    app = create_app(settings, backend=world.backend)
    with TestClient(app) as test_client:
        yield test_client


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_search_groups_per_video_best_moment_first(client):
    engine = client.app.state.engine
    body = client.get("/search", params={"q": "a bright bar moves right", "k": 10}).json()
    results = body["results"]
    assert body["query"] == "a bright bar moves right" and body["took_ms"] >= 0
    assert len(results) == 5 and not body["has_more"]
    ids = [r["video_id"] for r in results]
    assert len(set(ids)) == len(ids)  # one entry per video
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    # each score is the cosine of the query with that video's *best* segment
    with engine.readers.lease() as reader:
        from service.engine.inference import encode_texts

        q = encode_texts(engine.model, ["a bright bar moves right"])[0]
        for r in results:
            segs = reader.segments_of_video(r["video_id"])
            sims = reader.segment_embeddings([s.segment_id for s in segs]) @ q
            best = segs[int(np.argmax(sims))]
            assert r["segment_id"] == best.segment_id
            assert r["score"] == pytest.approx(float(sims.max()), abs=1e-4)
            assert (r["start"], r["end"]) == (best.start, best.end)
    first = results[0]
    assert first["stream_url"] == f"/videos/{first['video_id']}/stream"
    assert first["thumbnail_url"].startswith(f"/videos/{first['video_id']}/thumbnail")
    assert first["rerank_score"] is None


def test_paging_is_consistent(client):
    full = client.get("/search", params={"q": "grey", "k": 5}).json()["results"]
    page = client.get("/search", params={"q": "grey", "k": 2, "offset": 2}).json()
    assert [r["video_id"] for r in page["results"]] == [r["video_id"] for r in full[2:4]]
    assert page["has_more"] is True


def test_rerank_orders_top_videos_by_fusion_score(client):
    engine = client.app.state.engine
    body = client.get("/search", params={"q": "grey bar", "k": 5, "rerank": "true", "rerank_k": 3}).json()
    results = body["results"]
    assert body["rerank"] is True and body["rerank_k"] == 3
    reranked = [r for r in results[:3]]
    assert all(r["rerank_score"] is not None for r in reranked)
    assert [r["rerank_score"] for r in reranked] == sorted([r["rerank_score"] for r in reranked], reverse=True)
    assert all(r["rerank_score"] is None for r in results[3:])
    # the rerank score is the model's match log-odds on the segment's cached tokens plus the weighted cosine
    with engine.readers.lease() as reader:
        from service.engine.inference import match_scores

        top = reranked[0]
        match = match_scores(engine.model, reader.video_tokens([top["segment_id"]]), "grey bar")[0]
    weight = engine.model.config.heads.rerank_cosine_weight
    assert top["rerank_score"] == pytest.approx(float(match) + weight * top["score"], abs=1e-3)
    # the same three videos as without re-ranking, just reordered
    plain = client.get("/search", params={"q": "grey bar", "k": 3}).json()["results"]
    assert {r["video_id"] for r in plain} == {r["video_id"] for r in reranked}


def test_post_search_with_filters(client):
    videos = client.get("/videos").json()["videos"]
    wanted = [videos[1]["video_id"], videos[3]["video_id"]]
    body = client.post("/search", json={"q": "bar", "k": 10, "filters": {"video_ids": wanted}}).json()
    assert sorted(r["video_id"] for r in body["results"]) == sorted(wanted)
    long_only = client.post("/search", json={"q": "bar", "filters": {"min_duration": 7.5}}).json()["results"]
    assert long_only and all(r["duration"] >= 7.5 for r in long_only)


def test_qa_open_ended_and_multiple_choice(client):
    from tests.service.conftest import ANSWERS

    vid = client.get("/videos").json()["videos"][0]["video_id"]
    open_answer = client.post("/qa", json={"video_id": vid, "question": "what color is it?"})
    assert open_answer.status_code == 200, open_answer.text
    body = open_answer.json()
    assert body["answer"] in ANSWERS and 0 < body["score"] <= 1 and body["candidates"] is None
    choice = client.post("/qa", json={"video_id": vid, "question": "which way?", "candidates": ["left", "right", "up"]})
    body = choice.json()
    assert [c["text"] for c in body["candidates"]] == ["left", "right", "up"]
    assert sum(c["score"] for c in body["candidates"]) == pytest.approx(1.0, abs=1e-4)
    assert body["answer"] == max(body["candidates"], key=lambda c: c["score"])["text"]
    assert body["score"] == pytest.approx(max(c["score"] for c in body["candidates"]))
    ranged = client.post("/qa", json={"video_id": vid, "question": "what?", "start": 0, "end": 1.0}).json()
    assert len(ranged["segment_ids"]) == 1


def test_videos_list_detail_thumbnail(client):
    listing = client.get("/videos", params={"limit": 2}).json()
    assert listing["total"] == 5 and len(listing["videos"]) == 2
    vid = listing["videos"][0]["video_id"]
    detail = client.get(f"/videos/{vid}").json()
    assert detail["video_id"] == vid and detail["segments"]
    thumb = client.get(f"/videos/{vid}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"


def test_stream_ranges(client, world):
    vid = client.get("/videos").json()["videos"][0]["video_id"]
    path = client.get(f"/videos/{vid}").json()["path"]
    data = Path(path).read_bytes()
    whole = client.get(f"/videos/{vid}/stream")
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/videos/{vid}/stream", headers={"Range": "bytes=10-99"})
    assert part.status_code == 206 and part.content == data[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(data)}"
    tail = client.get(f"/videos/{vid}/stream", headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == data[-16:]
    bad = client.get(f"/videos/{vid}/stream", headers={"Range": f"bytes={len(data)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"
    assert "detail" in bad.json()
    head = client.head(f"/videos/{vid}/stream", headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.headers["content-length"] == "10" and head.content == b""


def test_similar_excludes_the_video_itself(client):
    vid = client.get("/videos").json()["videos"][2]["video_id"]
    body = client.get(f"/videos/{vid}/similar", params={"k": 10}).json()
    ids = [r["video_id"] for r in body["results"]]
    assert vid not in ids and len(ids) == 4 and len(set(ids)) == 4


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "needle"),
    [
        ("get", "/search", {"params": {"q": "   "}}, 422, "q must not be empty"),
        ("get", "/search", {"params": {"q": "x", "k": 0}}, 422, "k must be between 1 and 50"),
        ("get", "/search", {"params": {"q": "x", "k": 1000000}}, 422, "k must be between 1 and 50"),
        ("get", "/search", {"params": {"q": "x", "k": "many"}}, 422, "query.k"),
        ("get", "/search", {"params": {"q": "x" * 501}}, 422, "limit is 500"),
        ("get", "/search", {"params": {"q": "x", "offset": -1}}, 422, "offset"),
        ("get", "/search", {"params": {"q": "x", "rerank": "true", "rerank_k": 0}}, 422, "rerank_k"),
        ("get", "/search", {}, 422, "query.q: Field required"),
        ("post", "/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
         "malformed JSON"),
        ("post", "/search", {"json": {"q": "x", "filters": {"nope": 1}}}, 422, "body.filters.nope"),
        ("get", "/videos/999999", {}, 404, "no video with id 999999"),
        ("get", "/videos/abc", {}, 404, "video ids are integers"),
        ("get", "/videos/999999/stream", {}, 404, "no video"),
        ("get", "/videos/999999/similar", {}, 404, "no video"),
        ("post", "/qa", {"json": {"video_id": 999999, "question": "q"}}, 404, "no video"),
        ("post", "/qa", {"json": {"video_id": 1, "question": ""}}, 422, "question must not be empty"),
        ("post", "/qa", {"json": {"video_id": 1, "question": "q", "candidates": ["a"]}}, 422, "between 2 and"),
        ("post", "/qa", {"json": {"video_id": 1, "question": "q", "candidates": ["a", " "]}}, 422,
         "candidates[1]"),
        ("post", "/qa", {"json": {"video_id": 1, "question": "q", "start": 5, "end": 2}}, 422, "greater than start"),
        ("post", "/qa", {"json": {"video_id": 1, "question": "q", "start": 500}}, 400, "overlaps"),
        ("get", "/jobs/nope", {"headers": {"X-API-Key": API_KEY}}, 404, "no job"),
        ("get", "/no/such/route", {}, 404, "Not Found"),
    ],
)
def test_bad_inputs_get_clear_4xx(client, method, url, kwargs, status, needle):
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"]


def test_admin_auth(client):
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 403
    assert client.delete("/videos/1").status_code == 401
    assert client.post("/videos", json={"path": "x.mp4"}).status_code == 401
    ok = client.post("/admin/reload", headers={"X-API-Key": API_KEY})
    assert ok.status_code == 200 and ok.json()["generation"] >= 2


def test_admin_path_checks(client, world, tmp_path):
    h = {"X-API-Key": API_KEY}
    assert client.post("/videos", json={"path": "../etc/passwd"}, headers=h).status_code == 400
    assert client.post("/videos", json={"path": "/etc/passwd"}, headers=h).status_code == 403
    (world.library / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    try:
        assert client.post("/videos", json={"path": "link.mp4"}, headers=h).status_code == 403
    finally:
        (world.library / "link.mp4").unlink()
    assert client.post("/videos", json={"path": "missing.mp4"}, headers=h).status_code == 404
    assert client.post("/videos", content=b"{", headers={**h, "content-type": "application/json"}).status_code == 400
    assert client.post("/videos", json={"pth": "x"}, headers=h).status_code == 422
    too_big = client.post("/videos", files={"file": ("big.mp4", b"\0" * 300_000, "video/mp4")}, headers=h)
    assert too_big.status_code == 413
    assert client.post("/videos", files={"file": ("x.sh", b"echo", "text/plain")}, headers=h).status_code == 400


def test_metrics_exposition(client):
    client.get("/search", params={"q": "metrics probe"})
    text = client.get("/metrics").text
    assert 'clover_http_requests_total{method="GET",route="/search",status="200"}' in text
    assert 'clover_http_request_duration_seconds_bucket{method="GET",route="/search",le="+Inf"}' in text
    vectors = client.app.state.engine.readers.peek().num_vectors
    assert f"clover_index_vectors {float(vectors)}" in text and "clover_index_videos 5.0" in text
    assert "clover_query_batch_size_count" in text


def _wait_job(client, job, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(job["url"], headers={"X-API-Key": API_KEY}).json()
        if state["status"] in ("succeeded", "failed"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job['job_id']} did not finish")


def test_admin_add_upload_and_delete(client, world, library):
    h = {"X-API-Key": API_KEY}
    before = client.get("/videos").json()["total"]
    from tests.video_factory import write_video

    extra = write_video(world.library / "added" / "new.mp4", num_frames=30, seed=42)
    accepted = client.post("/videos", json={"path": "added"}, headers=h)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert accepted.headers["location"] == job["url"] and job["paths"] == [str(extra.resolve())]
    done = _wait_job(client, job)
    assert done["status"] == "succeeded", done
    assert client.get("/videos").json()["total"] == before + 1
    new_id = client.get("/videos", params={"q": "new"}).json()["videos"][0]["video_id"]

    uploaded = client.post("/videos", files={"file": ("my clip.mp4", extra.read_bytes(), "video/mp4")}, headers=h)
    assert uploaded.status_code == 202, uploaded.text
    upload_path = uploaded.json()["paths"][0]
    assert upload_path.endswith("_my_clip.mp4") and "/uploads/" in upload_path
    assert _wait_job(client, uploaded.json())["status"] == "succeeded"
    assert client.get("/videos").json()["total"] == before + 2
    up_id = client.get("/videos", params={"q": "my_clip"}).json()["videos"][0]["video_id"]

    for vid in (new_id, up_id):
        deleted = client.delete(f"/videos/{vid}", headers=h)
        assert deleted.status_code == 202
        assert _wait_job(client, deleted.json())["status"] == "succeeded"
        assert client.get(f"/videos/{vid}").status_code == 404
    assert extra.exists()  # library files are never deleted
    import os
    import shutil

    shutil.rmtree(extra.parent)

    assert not os.path.exists(upload_path)  # uploads are
    assert client.get("/videos").json()["total"] == before
