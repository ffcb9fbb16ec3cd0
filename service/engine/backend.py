"""How the engine reaches `model/` and `indexer/`.

Every call into the other packages goes through this one seam, imported lazily (so `service` imports without
them). The real backend is what production and the test suite use; a test may pass another object with the
same methods to provoke failures the real packages cannot be made to produce on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class IndexUnavailable(Exception):
    """The index directory cannot be opened as it is (missing, corrupt, or built with another checkpoint)."""


class Backend(Protocol):
    def load_model(self, checkpoint: Path, device: str) -> Any: ...

    def checkpoint_fingerprint(self, checkpoint: Path) -> str: ...

    def open_reader(self, index_dir: Path, fingerprint: str | None, db_url: str | None) -> Any: ...

    def index_paths(self, index_dir: Path, paths: list[Path], model: Any, db_url: str | None,
                    fingerprint: str | None, workers: int | None) -> dict: ...

    def delete_videos(self, index_dir: Path, ids_or_paths: list[Any], db_url: str | None) -> Any: ...


def resolve_device(device: str) -> str:
    """`auto` picks CUDA when present; anything else is passed to torch as written."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class CloverBackend:
    """The real thing: `model.Clover` and `indexer.reader` / `indexer.pipeline`."""

    def load_model(self, checkpoint: Path, device: str) -> Any:
        from model import Clover

        return Clover.from_pretrained(checkpoint, map_location=resolve_device(device)).eval()

    def checkpoint_fingerprint(self, checkpoint: Path) -> str:
        from model.checkpoint import fingerprint

        return fingerprint(checkpoint)

    def open_reader(self, index_dir: Path, fingerprint: str | None, db_url: str | None) -> Any:
        from indexer.reader import IndexOpenError, IndexReader

        try:
            reader = IndexReader.open(index_dir, checkpoint_fingerprint=fingerprint, db_url=db_url)
        except IndexOpenError as exc:
            raise IndexUnavailable(str(exc)) from exc
        reader.segment_owners([])  # read the segment -> video map now, not during the first search
        return reader

    def index_paths(self, index_dir: Path, paths: list[Path], model: Any, db_url: str | None,
                    fingerprint: str | None, workers: int | None) -> dict:
        from indexer.pipeline import index_paths

        # the fingerprint of the checkpoint file the service loaded, so the index and the service agree on it
        overrides = {} if workers is None else {"workers": workers}
        return index_paths(index_dir, paths, model, db_url=db_url, checkpoint_fingerprint=fingerprint, **overrides)

    def delete_videos(self, index_dir: Path, ids_or_paths: list[Any], db_url: str | None) -> Any:
        from indexer.pipeline import delete_videos

        return delete_videos(index_dir, ids_or_paths, db_url=db_url)
