"""Video-text samples, a decoded-frame cache, and the datasets the trainer and evaluator read.

Every video is decoded through the model's own preprocessing (`model.video_io`, `model.transforms`), the same
path the indexer uses. Small training sets are decoded once into a uint8 frame cache (a memory-mapped .npy):
on a 2-core CPU decoding every clip every epoch would cost more than the model. A corrupt video is skipped and
counted, never the end of a run.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from model.transforms import VideoTransform, sample_indices, shift_clip
from model.video_io import VideoDecodeError, probe_video, read_frames

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass
class Sample:
    """One video (or image: a 1-frame video) with its captions and questions."""

    video_id: str
    path: str  # absolute
    captions: list[str]
    questions: list[dict] = field(default_factory=list)
    start: float | None = None  # seconds; a time range inside the video (DiDeMo moments, segments)
    end: float | None = None
    meta: dict = field(default_factory=dict)


def read_jsonl_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Sample]:
    """JSONL, one video a line: `path` (or `video`), `captions` (or `caption` / `text`), optional `questions`.

    Relative paths resolve against `root`, by default the manifest's folder (synthworld writes them so).
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    samples = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line_no}: not JSON ({err})") from err
        samples.append(sample_from_row(row, base, f"{path.name}:{line_no}"))
    return samples


def sample_from_row(row: dict, base: Path, where: str) -> Sample:
    video = row.get("path") or row.get("video") or row.get("video_path")
    if not video:
        raise ValueError(f"{where}: no 'path' field")
    captions = row.get("captions") or row.get("caption") or row.get("text") or []
    if isinstance(captions, str):
        captions = [captions]
    known = {"path", "video", "video_path", "captions", "caption", "text", "questions", "video_id", "start", "end"}
    return Sample(
        video_id=str(row.get("video_id") or Path(video).stem),
        path=str((base / video).resolve()),
        captions=[str(c) for c in captions],
        questions=list(row.get("questions") or []),
        start=row.get("start"),
        end=row.get("end"),
        meta={k: v for k, v in row.items() if k not in known},
    )


def read_manifest(path: str | os.PathLike, fmt: str = "auto", root: str | os.PathLike | None = None) -> list[Sample]:
    """Any supported manifest; `fmt` is auto-detected from the suffix or given (see `training.formats`)."""
    from .formats import read_any

    return read_any(path, fmt=fmt, root=root)


def split_manifest(data_dir: str | os.PathLike, split: str) -> Path:
    """`DIR/{split}.jsonl` (synthworld layout), or the file itself when a manifest path is given."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        return data_dir
    path = data_dir / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no {split} manifest: {path}")
    return path


# ---- decoding ----------------------------------------------------------------------------------------------


def decode_clip(
    sample: Sample, num_frames: int, short_side: int, mode: str = "uniform", rng: Any = None
) -> np.ndarray:
    """uint8 [T, h, w, 3] for a sample: a video's frames in its time range, or an image repeated T times."""
    if Path(sample.path).suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(sample.path) as image:
                frame = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise VideoDecodeError(f"unreadable image: {err}") from err
        return np.repeat(frame[None], num_frames, axis=0)
    info = probe_video(sample.path)
    first = 0 if sample.start is None else int(round(sample.start * info.fps))
    stop = None if sample.end is None else max(first + 1, int(round(sample.end * info.fps)))
    indices = sample_indices(info.num_frames, num_frames, mode=mode, start=first, end=stop, rng=rng)
    return read_frames(sample.path, indices, short_side=short_side, info=info)


def _center_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize short side + centre crop, kept as uint8 so the cache stays 4x smaller than floats."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    h, w = video.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        video = torch.nn.functional.interpolate(video, size=(nh, nw), mode="bilinear", antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    video = video[:, :, top : top + size, left : left + size]
    return video.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _decode_for_cache(args: tuple[Sample, int, int]) -> tuple[np.ndarray | None, str | None]:
    sample, frames, size = args
    try:
        return _center_uint8(decode_clip(sample, frames, short_side=size), size), None
    except VideoDecodeError as err:
        return None, str(err)
    except Exception as err:  # a decoder crash on one hostile file must not end a run
        return None, f"{type(err).__name__}: {err}"


class FrameCache:
    """Every sample decoded once to uint8 [N, F, S, S, 3] in a memory-mapped .npy, plus a validity mask.

    F frames spread uniformly over the clip (or its time range); training then draws `num_frames` of them at
    random, which keeps temporal jitter without decoding again. Rebuilt when the manifest, F or S changes.
    """

    def __init__(self, array: np.ndarray, valid: np.ndarray, errors: dict[int, str]):
        self.array, self.valid, self.errors = array, valid, errors

    @classmethod
    def build(
        cls, samples: list[Sample], cache_path: str | os.PathLike, frames: int, size: int, workers: int = 2
    ) -> FrameCache:
        cache_path = Path(cache_path)
        meta_path = cache_path.with_suffix(".json")
        key = {"paths": [s.path for s in samples], "ranges": [[s.start, s.end] for s in samples],
               "frames": frames, "size": size}
        if cache_path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("key") == key:
                errors = {int(k): v for k, v in meta["errors"].items()}
                valid = np.array([i not in errors for i in range(len(samples))])
                return cls(np.load(cache_path, mmap_mode="r"), valid, errors)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        # Per process: two runs sharing a cache folder may build it at once; each renames a whole file into place.
        tmp = cache_path.with_name(f"{cache_path.stem}.{os.getpid()}.tmp.npy")
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(samples), frames, size, size, 3))
        errors: dict[int, str] = {}
        jobs = [(s, frames, size) for s in samples]
        if workers > 1:
            # spawn, not fork: a forked child of a process that already ran torch kernels can deadlock in OpenMP.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = pool.map(_decode_for_cache, jobs, chunksize=16)
                for i, (clip, error) in enumerate(results):
                    cls._store(array, errors, i, clip, error)
        else:
            for i, job in enumerate(jobs):
                cls._store(array, errors, i, *_decode_for_cache(job))
        array.flush()
        del array
        os.replace(tmp, cache_path)
        meta_tmp = meta_path.with_name(f"{meta_path.stem}.{os.getpid()}.tmp.json")
        meta_tmp.write_text(json.dumps({"key": key, "errors": {str(k): v for k, v in errors.items()}}))
        os.replace(meta_tmp, meta_path)
        if errors:
            log.warning("frame cache: %d of %d videos failed to decode and are skipped", len(errors), len(samples))
        valid = np.array([i not in errors for i in range(len(samples))])
        return cls(np.load(cache_path, mmap_mode="r"), valid, errors)

    @staticmethod
    def _store(array: np.ndarray, errors: dict, i: int, clip: np.ndarray | None, error: str | None) -> None:
        if clip is None:
            errors[i] = error or "unknown error"
        else:
            array[i] = clip


# ---- datasets ----------------------------------------------------------------------------------------------


class VideoTextDataset(Dataset):
    """(frames [T, 3, S, S], caption, index) per sample; training draws a random caption and random frames
    and, with `max_shift`, moves the clip by a random offset.

    With a `FrameCache`, frames come from the cache; otherwise each item is decoded on the fly in the
    DataLoader worker (large corpora). Samples that failed to decode are left out and counted in `skipped`.
    """

    def __init__(
        self,
        samples: list[Sample],
        num_frames: int,
        image_size: int,
        train: bool,
        cache: FrameCache | None = None,
        seed: int = 0,
        max_shift: int = 0,
    ):
        self.samples = samples
        self.num_frames, self.image_size, self.train = num_frames, image_size, train
        self.cache = cache
        self.indices = [i for i in range(len(samples)) if cache is None or cache.valid[i]]
        self.skipped = len(samples) - len(self.indices)
        # No scale jitter or crop: sizes are labels in synthworld. Translation (`max_shift` pixels, training only)
        # changes no caption and keeps the video tower from memorising where objects sit.
        self.transform = VideoTransform(image_size, train=False)
        self.max_shift = max_shift if train else 0
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def item_captions(self) -> list[str]:
        """The first caption of every item, in item order (what caption-neighbour batching groups by)."""
        return [(self.samples[i].captions or [""])[0] for i in self.indices]

    def item_caption_lengths(self) -> list[float]:
        """The mean length in words of every item's captions, in item order (what a curriculum ranks by)."""
        return [caption_length(self.samples[i].captions) for i in self.indices]

    def item_meta(self, key: str) -> list:
        """A manifest field of every item, in item order (None where missing; what `group_key` batching uses)."""
        return [self.samples[i].meta.get(key) for i in self.indices]

    def _rng(self, item: int) -> random.Random:
        # Reproducible per (seed, epoch, item) whatever the worker, so a resumed run sees the same data.
        return random.Random(hash((self.seed, self.epoch, item)) & 0xFFFFFFFF)

    def frames(self, index: int, rng: random.Random | None) -> np.ndarray:
        sample = self.samples[index]
        if self.cache is not None:
            stored = self.cache.array[index]  # [F, S, S, 3]
            mode = "random" if self.train else "uniform"
            picks = sample_indices(stored.shape[0], self.num_frames, mode=mode, rng=np.random.default_rng(
                rng.getrandbits(32)) if rng else None)
            return np.asarray(stored[picks])
        mode = "random" if self.train else "uniform"
        return decode_clip(sample, self.num_frames, self.image_size, mode=mode,
                           rng=np.random.default_rng(rng.getrandbits(32)) if rng else None)

    def clip(self, index: int, rng: random.Random | None) -> torch.Tensor:
        """Sample `index` as the model's input [T, 3, S, S]: its frames, moved by up to `max_shift` in training."""
        frames = self.frames(index, rng)
        if self.max_shift and rng is not None:
            frames = shift_clip(frames, self.max_shift, np.random.default_rng(rng.getrandbits(32)))
        return self.transform(frames)

    def __getitem__(self, item: int) -> dict[str, Any]:
        index = self.indices[item]
        sample = self.samples[index]
        rng = self._rng(item) if self.train else None
        caption = rng.choice(sample.captions) if (rng and sample.captions) else (sample.captions or [""])[0]
        frames = self.clip(index, rng)
        key = rng.getrandbits(32) if rng else index
        return {"frames": frames, "caption": caption, "index": index, "key": key}


class TextCollator:
    """Stacks frames and tokenises captions in the worker; with a masker also the masked text and MLM labels,
    with `negatives` (a `NounSwapper`) one hard negative caption per sample (`negative_*`, `has_negative`)."""

    def __init__(self, tokenizer: Any, max_length: int, masker: Callable | None = None,
                 negatives: Callable | None = None):
        self.tokenizer, self.max_length, self.masker, self.negatives = tokenizer, max_length, masker, negatives

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        captions = [item["caption"] for item in items]
        # Masks and swaps depend only on the batch's contents, not on the worker or the order batches arrive in.
        batch_key = hash(tuple(item["key"] for item in items)) & 0xFFFFFFFF
        if self.masker is not None and hasattr(self.masker, "reseed"):
            self.masker.reseed(batch_key)
        batch: dict[str, Any] = {
            "frames": torch.stack([item["frames"] for item in items]),  # (B, T, 3, S, S)
            "index": torch.tensor([item["index"] for item in items]),
        }
        if self.masker is not None:
            masked = self.masker(captions)
            batch.update(
                input_ids=masked["input_ids"], attention_mask=masked["attention_mask"],
                masked_input_ids=masked["masked_input_ids"], mlm_labels=masked["labels"],
            )
        else:
            tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt")
            batch.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        if self.negatives is not None:
            swapped = self.negatives(captions, random.Random(batch_key))
            tokens = self.tokenizer([neg or cap for neg, cap in zip(swapped, captions, strict=True)], padding=True,
                                    truncation=True, max_length=self.max_length, return_tensors="pt")
            batch.update(negative_input_ids=tokens["input_ids"], negative_attention_mask=tokens["attention_mask"],
                         has_negative=torch.tensor([neg is not None for neg in swapped]))
        return batch


def caption_length(captions: list[str]) -> float:
    """Mean words per caption (0 for none): a simple clip gets a short description in any phrasing."""
    return sum(len(c.split()) for c in captions) / len(captions) if captions else 0.0
