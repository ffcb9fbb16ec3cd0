"""Synthetic inputs for the benchmarks: segment-like embeddings, a throw-away checkpoint, and a real index grown
to any size with synthetic segments.

## The embedding generator

Real segment embeddings are not uniform on the sphere: the segments of one video sit close together around a
direction for that video, and a text query lands near the video it describes. `clustered_vectors` models that as
a mixture of Gaussians projected on the unit sphere:

- `n / per_video` centres ("videos"), uniform on the sphere (normalised standard normals);
- each vector = normalise(centre + noise * g / sqrt(D)), g ~ N(0, I_D), `per_video` consecutive rows per centre;
  with noise 0.75 the cosine of a vector to its centre is about 1 / sqrt(1 + 0.75^2) = 0.8;
- queries are drawn the same way around centres picked at random.

`uniform_vectors` (normalised standard normals) is the stress case: no structure at all, every point is almost
equally far from every other in 256-D, the worst case for approximate search.

## Growing a real index (`expand_index`)

Encoding 100k clips on a CPU takes hours, and a benchmark of search and serving does not need their content. So
a small index is built by the real indexer over a few real videos, then grown through the indexer's own stores
and catalog: per synthetic video one `videos` row (status `indexed`, path `/synthetic/<tag>/<n>.mp4`, which does
not exist), `per_video` `segments` rows, one fp16 shard of embeddings (clustered, as above) and tokens (copies of
the real segments' tokens, cycled, so re-ranking costs what it costs on real data), and FAISS rebuilt with
`indexer.maintenance.sync_vectors` (the size-based default factory unless one is given). Every synthetic segment
points at one shared thumbnail, `thumbs/synthetic.jpg`. The result opens with `IndexReader` and passes
`clover index verify`; `clover index update --prune` would drop the synthetic videos again (their files do not
exist), and so does `clover index delete`.
"""

from __future__ import annotations

import itertools
import math
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

SYNTHETIC_ROOT = "/synthetic"
SHARD_ROWS = 4096  # segments per written shard (the compaction size the indexer uses too)
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "cross", "ball"]
MOTIONS = ["moves left", "moves right", "moves up", "moves down", "grows", "shrinks", "spins", "stays still"]
SIZES = ["small", "large", "tiny", "big"]
QA_ANSWERS = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "left", "right", "up", "down"]


# ---------------------------------------------------------------------------------------------- vectors


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def uniform_vectors(n: int, dim: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """[n, dim] float32 uniform on the unit sphere (filled in chunks: 1M x 256 never needs two copies)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out[start:stop] = _normalise_rows(rng.standard_normal((stop - start, dim), dtype=np.float32))
    return out


def clustered_vectors(
    n: int, dim: int, seed: int, per_video: int = 10, noise: float = 0.75, num_queries: int = 0,
    chunk: int = 100_000,
) -> tuple[np.ndarray, np.ndarray]:
    """(base [n, dim], queries [num_queries, dim]) float32 unit vectors from the mixture described above."""
    rng = np.random.default_rng(seed)
    centres = uniform_vectors(max(math.ceil(n / per_video), 1), dim, seed + 1)
    scale = np.float32(noise / math.sqrt(dim))  # a float64 scalar would make the queries float64 (NEP 50)

    def around(which: np.ndarray) -> np.ndarray:
        x = centres[which] + scale * rng.standard_normal((len(which), dim), dtype=np.float32)
        return _normalise_rows(x)

    base = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        base[start:stop] = around(np.arange(start, stop) // per_video)
    queries = around(rng.integers(0, len(centres), num_queries)) if num_queries else np.zeros((0, dim), np.float32)
    return base, queries


# ---------------------------------------------------------------------------------------------- text and clips


def captions(seed: int) -> Iterator[str]:
    """Distinct synthworld-like captions ("a small red circle moves left") in a shuffled order, numbered once the
    1,536 combinations run out: as queries they never repeat, so no query cache can answer them."""
    combos = [f"a {s} {c} {sh} {m}" for s in SIZES for c in COLOURS for sh in SHAPES for m in MOTIONS]
    random.Random(seed).shuffle(combos)
    return (combos[i % len(combos)] + (f" {i // len(combos)}" if i >= len(combos) else "")
            for i in itertools.count())


def random_clips(n: int, num_frames: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """[n, T, 3, S, S] standard-normal frames: what normalised pixels look like to the model, at no decode cost."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, num_frames, 3, image_size, image_size, generator=generator)


# ---------------------------------------------------------------------------------------------- checkpoint


def make_checkpoint(directory: Path, preset: str = "clover-tiny", seed: int = 0, **overrides: Any) -> Path:
    """A randomly initialised checkpoint with an open-ended QA head (reused when `directory` already holds one).

    Speed does not depend on the weights, so this stands in for a trained checkpoint in every timing benchmark.
    """
    directory = Path(directory)
    if (directory / "config.json").is_file() and (directory / "model.safetensors").is_file():
        return directory
    import torch

    from model import create_model

    torch.manual_seed(seed)
    model = create_model(preset, **overrides)
    model.set_answer_vocab(QA_ANSWERS)
    return model.save_pretrained(directory)


# ---------------------------------------------------------------------------------------------- index


def expand_index(
    index_dir: str | Path, num_segments: int, *, per_video: int = 10, seed: int = 0, factory: str | None = None,
    tag: str = "bench",
) -> dict[str, Any]:
    """Grow a real index with synthetic videos until it holds `num_segments` indexed segments (see above)."""
    from sqlalchemy import func, insert, select

    from indexer.catalog import STATUS_INDEXED, Segment, Video, utcnow
    from indexer.maintenance import sync_vectors
    from indexer.pipeline import open_for_writing

    began = time.perf_counter()
    with open_for_writing(index_dir) as opened:
        paths, manifest, catalog, store = opened.paths, opened.manifest, opened.catalog, opened.store
        counts = catalog.counts()
        missing = num_segments - counts["segments"]
        if missing <= 0:
            return {"added_segments": 0, "added_videos": 0, "segments": counts["segments"], "seconds": 0.0,
                    "factory": manifest.built_factory}
        real = catalog.indexed_segment_locations()
        if not real:
            raise ValueError(f"{index_dir} holds no real segment to copy tokens and a thumbnail from")
        token_pool = store.read_tokens([(shard, row) for _, shard, row in real[:64]])  # [P, K, C] fp16
        thumbnail = _shared_thumbnail(paths.root, catalog)
        prefix = f"{SYNTHETIC_ROOT}/{tag}/"
        with catalog.session() as session:  # ids are never reused, so names from the next id never collide
            first = int(session.scalar(select(func.max(Video.id))) or 0) + 1
        num_videos = math.ceil(missing / per_video)
        embeddings, _ = clustered_vectors(num_videos * per_video, manifest.dim, seed=seed + first,
                                          per_video=per_video)
        embeddings = embeddings[:missing]
        window = float(manifest.window)
        videos_per_shard = max(1, SHARD_ROWS // per_video)
        added = 0
        for video_start in range(0, num_videos, videos_per_shard):
            video_stop = min(num_videos, video_start + videos_per_shard)
            row_start, row_stop = video_start * per_video, min(missing, video_stop * per_video)
            rows = row_stop - row_start
            shard = store.new_shard_name()
            tokens = token_pool[np.arange(row_start, row_stop) % len(token_pool)]  # [rows, K, C]
            store.write_shard(shard, embeddings[row_start:row_stop].astype(np.float16), tokens)
            lengths = [min(per_video, missing - v * per_video) for v in range(video_start, video_stop)]
            now = utcnow()
            video_rows = [
                {"path": f"{prefix}{first + v:08d}.mp4", "title": f"synthetic video {first + v}", "fingerprint": None,
                 "size_bytes": 0, "mtime_ns": 0, "duration": length * window, "fps": 25.0, "width": 320,
                 "height": 240, "num_frames": int(length * window * 25), "codec": "synthetic",
                 "status": STATUS_INDEXED, "extra": {"synthetic": True}, "num_segments": length,
                 "indexed_at": now}
                for v, length in zip(range(video_start, video_stop), lengths, strict=True)
            ]  # fmt: skip
            with catalog.session() as session:  # one transaction per shard, as the indexer's writer does
                ids = list(session.scalars(insert(Video).returning(Video.id, sort_by_parameter_order=True),
                                           video_rows))
                segment_rows, row = [], 0
                for video_id, length in zip(ids, lengths, strict=True):
                    for ordinal in range(length):
                        segment_rows.append({"video_id": video_id, "ordinal": ordinal, "start": ordinal * window,
                                             "end": (ordinal + 1) * window, "shard": shard, "row": row,
                                             "thumbnail": thumbnail})
                        row += 1
                session.execute(insert(Segment), segment_rows)
            added += rows
        synced = sync_vectors(paths, catalog, store, manifest, factory=factory)
        counts = catalog.counts()
    return {"added_segments": added, "added_videos": num_videos, "segments": counts["segments"],
            "videos": counts["videos"], "seconds": round(time.perf_counter() - began, 2),
            "factory": synced["factory"]}


def _shared_thumbnail(root: Path, catalog: Any) -> str:
    """thumbs/synthetic.jpg, a copy of a real segment's thumbnail owned by no video (no delete removes it)."""
    from sqlalchemy import select

    from indexer.catalog import Segment

    relpath = "thumbs/synthetic.jpg"
    target = root / relpath
    if not target.is_file():
        with catalog.session() as session:
            source = session.scalar(select(Segment.thumbnail).where(Segment.thumbnail.is_not(None)).limit(1))
        if source is None or not (root / source).is_file():
            raise ValueError("the index has no thumbnail to copy")
        shutil.copyfile(root / source, target)
    return relpath


def tiny_world(directory: str | Path, videos: int = 5, seed: int = 0) -> dict[str, Path]:
    """The service tests' world, for scripts: the tests' tiny Clover (saved with a QA head), a library of short
    generated videos, and a real index of it (2 s windows every 1 s). Reused when `directory` already has it."""
    from indexer.pipeline import index_paths
    from model import Clover
    from model.checkpoint import fingerprint
    from tests.model.helpers import tiny_model
    from tests.video_factory import write_video

    directory = Path(directory)
    checkpoint, library, index_dir = directory / "checkpoint", directory / "library", directory / "index"
    if not (checkpoint / "model.safetensors").is_file():
        import torch

        torch.manual_seed(seed)
        model = tiny_model()
        model.set_answer_vocab(QA_ANSWERS)
        model.save_pretrained(checkpoint)
    if not (index_dir / "index.json").is_file():
        paths = [write_video(library / f"clip{i}.mp4", num_frames=40 + 10 * i, fps=10, seed=seed + i)
                 for i in range(videos)]
        index_paths(index_dir, paths, Clover.from_pretrained(checkpoint), checkpoint_fingerprint=fingerprint(checkpoint),
                    window=2.0, stride=1.0, workers=0)
    return {"checkpoint": checkpoint, "library": library.resolve(), "index_dir": index_dir}
