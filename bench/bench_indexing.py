"""Indexing throughput: end-to-end clips/s against decode alone and encode alone, in one run.

    python bench/bench_indexing.py                   # clover-tiny, 12 generated 320x240 videos of 12 s
    python bench/bench_indexing.py --quick           # 4 short videos: a smoke run
    python bench/bench_indexing.py --device cuda --workers 8 --batch-size 64

A clip is one segment (window) sampled to the model's frame count. `decode only` runs the decode stage
(probe, seek, decode, resize, normalise, thumbnails) on its workers and throws the clips away; `encode only`
runs the video tower on clips decoded beforehand; `end to end` is `indexer.pipeline.index_paths` into a fresh
index (decode workers overlapping the encoder, shard + catalog writes, FAISS). End to end near the slower of
the other two means the overlap works; well below it means a stage is waiting on the other.

Also measured: the peak resident memory of the indexing process during the end-to-end build (and of the largest
decode worker), and the bytes each segment costs on disk, per file kind (FAISS vectors, fp16 embeddings, fp16
tokens, thumbnails, catalog). Prints markdown and writes bench/results/indexing[-quick].json.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, fmt_bytes, header, peak_rss_mib, reset_peak_rss, table, write_result  # noqa: E402
from indexer.decode import DecodedChunk, DecodeSettings  # noqa: E402
from indexer.encode import SegmentEncoder  # noqa: E402
from indexer.pipeline import checkpoint_fingerprint_of, index_paths  # noqa: E402
from indexer.reader import IndexReader  # noqa: E402
from indexer.scheduler import DecodeStage, VideoJob  # noqa: E402


def make_videos(directory: Path, count: int, seconds: float, width: int, height: int, fps: int) -> list[Path]:
    from tests.video_factory import write_video  # PyAV encodes them; not needed with --video-dir

    return [
        write_video(directory / f"video_{i:03d}.mp4", num_frames=int(seconds * fps), width=width, height=height,
                    fps=fps, seed=i)
        for i in range(count)
    ]  # fmt: skip


def decode_only(
    videos: list[Path], settings: DecodeSettings, workers: int
) -> tuple[int, float, list[torch.Tensor]]:
    jobs = [VideoJob(i, str(path)) for i, path in enumerate(videos)]
    clips: list[torch.Tensor] = []
    began = time.perf_counter()
    for item in DecodeStage(settings, workers=workers).run(jobs):
        if isinstance(item, DecodedChunk):
            clips.extend(item.clips)
    return len(clips), time.perf_counter() - began, clips


def encode_only(model, clips: list[torch.Tensor], batch_size: int) -> float:
    encoder = SegmentEncoder(model)
    encoder.encode(torch.stack(clips[:batch_size]))  # warm-up (allocator, kernels)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for start in range(0, len(clips), batch_size):
        encoder.encode(torch.stack(clips[start : start + batch_size]))  # results come back to the CPU: synced
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="clover-tiny")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each generated video")
    parser.add_argument("--size", default="320x240", help="WxH of the generated videos")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in this process (0 = default)")
    parser.add_argument("--quick", action="store_true", help="4 videos of 6 s")
    parser.add_argument("--video-dir", type=Path,
                        help="index the *.mp4 files of this folder instead of generating videos (e.g. ones made "
                             "beforehand by `python -m bench.bench_indexing --write-videos DIR`)")
    parser.add_argument("--write-videos", type=Path, help="only write the generated videos into this folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.seconds = 4, 6.0
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    if args.write_videos is not None:
        make_videos(args.write_videos, args.videos, args.seconds, width, height, args.fps)
        return 0

    from model import create_model

    torch.manual_seed(0)
    model = create_model(args.model).to(args.device).eval()
    fingerprint = checkpoint_fingerprint_of(model)
    settings = DecodeSettings(model.config.num_frames, model.config.image_size, args.window, args.window)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        video_root = args.video_dir.resolve() if args.video_dir is not None else root / "videos"
        if args.video_dir is not None:
            videos = sorted(video_root.glob("*.mp4"))
        else:
            videos = make_videos(video_root, args.videos, args.seconds, width, height, args.fps)
        decode_only(videos[:1], settings, args.workers)  # start the worker server once, as a long build would
        clip_count, decode_seconds, clips = decode_only(videos, settings, args.workers)
        encode_seconds = encode_only(model, clips, args.batch_size)
        del clips
        peak_is_phase = reset_peak_rss()
        summary = index_paths(
            root / "index", [video_root], model, checkpoint_fingerprint=fingerprint,
            window=args.window, stride=args.window, workers=args.workers, batch_size=args.batch_size,
        )  # fmt: skip
        peak_main = peak_rss_mib()
        peak_worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        disk = bytes_per_segment(root / "index")
    assert summary["segments_added"] == clip_count, (summary["segments_added"], clip_count)
    timings = summary["timings"]

    machine = header(f"Indexing throughput: {args.model} on {args.device}", args.quick)
    emit(
        f"torch {torch.get_num_threads()} threads, {args.workers} decode workers, batch {args.batch_size}; "
        + (f"{len(videos)} H.264 videos from {args.video_dir}; " if args.video_dir is not None else
           f"{args.videos} generated H.264 videos, {width}x{height} @ {args.fps} fps, {args.seconds:g} s each; ")
        + f"{args.window:g} s windows -> {clip_count} clips of {model.config.num_frames} frames at "
        f"{model.config.image_size}px\n"
    )
    rates = {"decode only": decode_seconds, "encode only": encode_seconds,
             "end to end (decode + encode + write + FAISS)": summary["seconds"]}
    emit(table(["stage", "clips", "seconds", "clips/s"],
               [[name, clip_count, f"{sec:.2f}", f"{clip_count / sec:.1f}"] for name, sec in rates.items()]))
    stage_times = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timings.items())
    emit(f"\nend-to-end stage times: {stage_times} (decode_wait = encoder idle waiting for clips)")
    emit(f"\npeak resident memory during the end-to-end build: {peak_main:.0f} MiB in the indexing process"
         + ("" if peak_is_phase else " (whole process life: this kernel cannot reset the peak)")
         + f", {peak_worker:.0f} MiB in the largest decode worker\n")
    emit(table(["on disk per segment", "bytes"], [[kind, f"{size:,.0f}"] for kind, size in disk.items()]))
    emit(f"\n({disk['total']:,.0f} bytes per segment = {fmt_bytes(disk['total'] * 1_000_000)} per million segments; "
         "the catalog's share shrinks as videos get longer)")
    write_result("indexing", {
        "model": args.model, "device": args.device, "torch_threads": torch.get_num_threads(),
        "workers": args.workers, "batch_size": args.batch_size, "videos": len(videos), "clips": clip_count,
        "clips_per_s": {name: round(clip_count / sec, 2) for name, sec in rates.items()},
        "stage_seconds": timings, "peak_rss_mib": {"indexer": round(peak_main, 1), "decode_worker": round(peak_worker, 1),
                                                   "indexer_peak_is_phase": peak_is_phase},
        "bytes_per_segment": disk,
    }, args.quick, machine)  # fmt: skip
    return 0


def bytes_per_segment(index_dir: Path) -> dict[str, float]:
    """Disk bytes per indexed segment by kind (from the reader's stats, plus the catalog file and its WAL)."""
    with IndexReader.open(index_dir) as reader:
        stats = reader.stats()
    segments = max(stats["segments"], 1)
    catalog = sum(p.stat().st_size for p in index_dir.glob("catalog.sqlite*"))
    sizes = {"vectors (FAISS)": stats["bytes"]["vectors"], "embeddings (fp16)": stats["bytes"]["embeddings"],
             "tokens (fp16)": stats["bytes"]["tokens"], "thumbnails (JPEG)": stats["bytes"]["thumbs"],
             "catalog (SQLite)": catalog}
    per_segment = {kind: round(size / segments, 1) for kind, size in sizes.items()}
    per_segment["total"] = round(sum(sizes.values()) / segments, 1)
    return per_segment


if __name__ == "__main__":
    sys.exit(main())
