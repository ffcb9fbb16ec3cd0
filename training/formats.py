"""Readers for the manifest formats of the usual video-language corpora, all returning `list[Sample]`.

`read_any(path, fmt="auto", root=None)` picks the reader from the suffix and the header (or takes `fmt`).
Relative media paths resolve against `root`, by default the manifest's folder. Nothing here opens a video:
a missing or broken file is found (and skipped, counted) when it is decoded.

| fmt | file | one Sample per |
| --- | --- | --- |
| `jsonl` | generic JSONL (synthworld), see `training.data.read_jsonl_manifest` | line |
| `csv` | CSV with a path column and caption column(s) | path (rows of one path merge) |
| `webvid` | WebVid-10M/2M CSV | row |
| `cc3m` | CC3M TSV: caption, image (images are 1-frame videos) | row |
| `msrvtt` | MSR-VTT 1k-A test split (`MSRVTT_JSFUSION_test.csv`) | row (1000 videos, one query each) |
| `msrvtt-json` | `MSRVTT_data.json` (`videos` + `sentences`) | video, every sentence a caption |
| `didemo` | DiDeMo JSON (one entry per moment) | video: the paragraph of its descriptions |
| `qa` | QA JSONL (or a JSON list), one question a row | video, its questions in order |

Examples (each also lives, as a tiny file, in `tests/training/data/`):

`csv` -- columns `path` (or `video`, `video_path`, `filepath`), a caption column `caption` (or `text`, `title`,
`name`, `sentence`), or `captions` holding a JSON list; optional `video_id`, `start`, `end` (seconds)::

    path,caption,start,end
    clips/a.mp4,a dog runs on the beach,,
    clips/a.mp4,a dog plays in the sand,,

`webvid` -- the released CSV; the video is `{root}/{page_dir}/{videoid}.mp4` (the layout of the usual download
scripts), the caption is `name`::

    videoid,contentUrl,duration,page_dir,name
    21179416,https://.../21179416.mp4,PT00H00M11S,006001_006050,Aerial shot of winter forest

`cc3m` -- tab-separated `caption<TAB>image`, no header (a header row naming `url`/`image`/`path`/`filepath` is
skipped). The image is a path relative to `root`, or a URL: a URL's image is looked for where img2dataset's
"files" output puts row i (10,000 per shard): `{root}/{i // 10000:05d}/{i:09d}.jpg`::

    a cat sitting on a window sill<TAB>images/cat.jpg

`msrvtt` -- `key,vid_key,video_id,sentence`; the video is `{root}/{video_id}.mp4`::

    key,vid_key,video_id,sentence
    ret0,msr7579,video7579,a girl wearing red top and black trouser is putting a sweater on a dog

`msrvtt-json` -- `{"videos": [{"video_id": ...}, ...], "sentences": [{"video_id", "caption"}, ...]}`; videos in
the order of `videos` (or of first mention), `{root}/{video_id}.mp4`::

    {"videos": [{"video_id": "video0", "split": "train"}],
     "sentences": [{"video_id": "video0", "caption": "a car is shown", "sen_id": 0}]}

`didemo` -- a JSON list of moments `{"video", "description" | "descriptions", "times"}`. Paragraph-to-video
retrieval (as CLIP4Clip, without ground-truth proposals): every description of a video, in file order, joined
into one paragraph over the whole video; `times` is ignored. The video is `{root}/{video}` (`.mp4` appended
when the name has no suffix)::

    [{"video": "v1.mp4", "description": "a man walks in", "times": [[0, 0]]},
     {"video": "v1.mp4", "description": "the man sits down", "times": [[2, 3]]}]

`qa` -- one question a line: `video` (or `path`; else `video_id` -> `{root}/{video_id}.mp4`), `question`,
`answer`, optional `candidates` (multiple choice: the answer must be one of them), `type`, `subtype`. Types
default to `open` (no candidates) and `mc`::

    {"video": "clips/a.mp4", "question": "what color is the car?", "answer": "red"}
    {"video": "clips/a.mp4", "question": "what happens?", "answer": "it turns",
     "candidates": ["it stops", "it turns", "it jumps", "it flies", "it sinks"], "type": "action"}
"""

from __future__ import annotations

import csv
import json
import os
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

from .data import Sample, read_jsonl_manifest

FORMATS = ("jsonl", "csv", "webvid", "cc3m", "msrvtt", "msrvtt-json", "didemo", "qa")

_PATH_COLUMNS = ("path", "video", "video_path", "filepath")
_CAPTION_COLUMNS = ("caption", "text", "title", "name", "sentence")
_WEBVID_COLUMNS = {"videoid", "page_dir", "name"}
_MSRVTT_COLUMNS = {"key", "vid_key", "video_id", "sentence"}
_CC3M_HEADER = {"url", "image", "path", "filepath", "image_url"}
_CC3M_PER_SHARD = 10_000


def read_any(path: str | os.PathLike, fmt: str = "auto", root: str | os.PathLike | None = None) -> list[Sample]:
    """Samples from any supported manifest (see the module docstring); `fmt="auto"` detects the format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in _READERS:
        raise ValueError(f"unknown manifest format {fmt!r}; choose from {', '.join(FORMATS)}")
    base = Path(root) if root is not None else path.parent
    if fmt == "jsonl":
        return read_jsonl_manifest(path, base)
    return _READERS[fmt](path, base)


def detect_format(path: Path) -> str:
    """The format of a manifest from its suffix and its first record or header."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        first = next((line for line in _lines(path) if line.strip()), "{}")
        row = json.loads(first)
        return "qa" if "question" in row and "questions" not in row else "jsonl"
    if suffix == ".tsv":
        return "cc3m"
    if suffix == ".csv":
        with path.open(newline="") as f:
            header = {name.strip() for name in next(csv.reader(f), [])}
        if _WEBVID_COLUMNS.issubset(header):
            return "webvid"
        if _MSRVTT_COLUMNS.issubset(header):
            return "msrvtt"
        return "csv"
    if suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "sentences" in data:
            return "msrvtt-json"
        if isinstance(data, list) and data and isinstance(data[0], dict):
            if "question" in data[0]:
                return "qa"
            if "description" in data[0] or "descriptions" in data[0]:
                return "didemo"
    raise ValueError(f"cannot tell the format of {path}; pass fmt= one of {', '.join(FORMATS)}")


# ---- readers ----------------------------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _resolve(base: Path, media: str) -> str:
    return str((base / media).resolve())


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(f)]


def _optional_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def read_csv(path: Path, base: Path) -> list[Sample]:
    rows = _csv_rows(path)
    if not rows:
        return []
    columns = set(rows[0])
    path_column = next((c for c in _PATH_COLUMNS if c in columns), None)
    caption_column = next((c for c in _CAPTION_COLUMNS if c in columns), None)
    if path_column is None or (caption_column is None and "captions" not in columns):
        raise ValueError(f"{path}: needs a path column ({'/'.join(_PATH_COLUMNS)}) and a caption column "
                         f"({'/'.join(_CAPTION_COLUMNS)} or captions); found {sorted(columns)}")
    merged: OrderedDict[tuple, Sample] = OrderedDict()
    for line_no, row in enumerate(rows, 2):
        media = row[path_column]
        if not media:
            raise ValueError(f"{path}:{line_no}: empty {path_column}")
        captions = json.loads(row["captions"]) if row.get("captions") else []
        if caption_column and row[caption_column]:
            captions.append(row[caption_column])
        start, end = _optional_float(row.get("start")), _optional_float(row.get("end"))
        key = (media, start, end)
        if key not in merged:
            merged[key] = Sample(video_id=row.get("video_id") or Path(media).stem, path=_resolve(base, media),
                                 captions=[], start=start, end=end)
        merged[key].captions += [str(c) for c in captions]
    return list(merged.values())


def read_webvid(path: Path, base: Path) -> list[Sample]:
    samples = []
    for row in _csv_rows(path):
        video_id = row["videoid"]
        meta = {k: row[k] for k in ("contentUrl", "duration") if row.get(k)}
        samples.append(Sample(video_id=video_id, path=_resolve(base, f"{row['page_dir']}/{video_id}.mp4"),
                              captions=[row["name"]], meta=meta))
    return samples


def read_cc3m(path: Path, base: Path) -> list[Sample]:
    samples = []
    index = 0  # data rows only: the img2dataset key of a URL row
    for line_no, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ValueError(f"{path}:{line_no}: expected 'caption<TAB>image'")
        caption, image = parts[0].strip(), parts[1].strip()
        if line_no == 1 and image.lower() in _CC3M_HEADER:
            continue
        if urlparse(image).scheme in ("http", "https"):
            local = f"{index // _CC3M_PER_SHARD:05d}/{index:09d}.jpg"
            meta = {"url": image}
        else:
            local, meta = image, {}
        samples.append(Sample(video_id=f"{index:09d}", path=_resolve(base, local), captions=[caption], meta=meta))
        index += 1
    return samples


def read_msrvtt(path: Path, base: Path) -> list[Sample]:
    return [
        Sample(video_id=row["video_id"], path=_resolve(base, f"{row['video_id']}.mp4"), captions=[row["sentence"]],
               meta={"key": row["key"]})
        for row in _csv_rows(path)
    ]


def read_msrvtt_json(path: Path, base: Path) -> list[Sample]:
    data = json.loads(path.read_text())
    captions: OrderedDict[str, list[str]] = OrderedDict(
        (str(video["video_id"]), []) for video in data.get("videos", [])
    )
    splits = {str(video["video_id"]): video.get("split") for video in data.get("videos", [])}
    for sentence in data["sentences"]:
        captions.setdefault(str(sentence["video_id"]), []).append(str(sentence["caption"]))
    return [
        Sample(video_id=vid, path=_resolve(base, f"{vid}.mp4"), captions=texts,
               meta={"split": splits[vid]} if splits.get(vid) else {})
        for vid, texts in captions.items()
        if texts
    ]


def read_didemo(path: Path, base: Path) -> list[Sample]:
    paragraphs: OrderedDict[str, list[str]] = OrderedDict()
    for entry in json.loads(path.read_text()):
        parts = entry.get("descriptions") or entry.get("description") or []
        parts = [parts] if isinstance(parts, str) else list(parts)
        paragraphs.setdefault(str(entry["video"]), []).extend(p.strip() for p in parts if p.strip())
    samples = []
    for video, parts in paragraphs.items():
        name = video if Path(video).suffix else f"{video}.mp4"
        paragraph = " ".join(p if p.endswith((".", "!", "?")) else f"{p}." for p in parts)
        samples.append(Sample(video_id=Path(video).stem, path=_resolve(base, name), captions=[paragraph],
                              meta={"num_descriptions": len(parts)}))
    return samples


def read_qa(path: Path, base: Path) -> list[Sample]:
    if path.suffix.lower() == ".json":
        rows = json.loads(path.read_text())
    else:
        rows = [json.loads(line) for line in _lines(path) if line.strip()]
    samples: OrderedDict[str, Sample] = OrderedDict()
    for number, row in enumerate(rows, 1):
        media = row.get("video") or row.get("path")
        if not media:
            if "video_id" not in row:
                raise ValueError(f"{path}: question {number} names no video ('video', 'path' or 'video_id')")
            media = f"{row['video_id']}.mp4"
        candidates = row.get("candidates")
        answer = str(row["answer"])
        if candidates is not None:
            candidates = [str(c) for c in candidates]
            if answer not in candidates:
                raise ValueError(f"{path}: question {number}: the answer {answer!r} is not among its candidates")
        qtype = row.get("type") or ("open" if candidates is None else "mc")
        question = {"type": qtype, "subtype": row.get("subtype") or qtype, "question": str(row["question"]),
                    "answer": answer, "candidates": candidates,
                    "answer_index": None if candidates is None else candidates.index(answer)}
        if media not in samples:
            video_id = str(row.get("video_id") or Path(media).stem)
            samples[media] = Sample(video_id=video_id, path=_resolve(base, media), captions=[])
        samples[media].questions.append(question)
    return list(samples.values())


_READERS = {
    "jsonl": read_jsonl_manifest,
    "csv": read_csv,
    "webvid": read_webvid,
    "cc3m": read_cc3m,
    "msrvtt": read_msrvtt,
    "msrvtt-json": read_msrvtt_json,
    "didemo": read_didemo,
    "qa": read_qa,
}
