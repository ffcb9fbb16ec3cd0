"""FAISS indexes over segment embeddings, named by factory strings and searched by inner product.

Embeddings are unit-norm, so inner product is cosine similarity. Every index is an `IndexIDMap2` whose ids are
catalog segment ids (IDMap2 keeps the id map inside the file and supports `remove_ids` where the inner index
does). The inner index is a FAISS factory string chosen by collection size unless the user names one:

| vectors   | factory                  | search params           | why                                          |
| --------- | ------------------------ | ----------------------- | -------------------------------------------- |
| < 50k     | Flat                     |                         | exact; brute force over 50k x D is a few ms  |
| 50k .. 1M | HNSW32                   | efSearch=128            | ~0.95+ recall at a fraction of Flat's cost   |
| >= 1M     | IVF{n},PQ{m},Refine(SQ8) | nprobe=64,k_factor_rf=4 | PQ finds a shortlist 4x wider than k, 8-bit  |
|           |                          |                         | scalar codes re-score it near-exactly        |

At 1M clustered 256-d vectors the refined IVF-PQ beats HNSW32 on recall (R@10 0.77 vs 0.75) in a quarter of
its memory (325 MiB vs 1.2 GiB) at half its latency (0.64 vs 1.32 ms, one `make bench` run), and doubles plain
IVF-PQ's R@1 (0.81 vs 0.39, docs/benchmarks.md). FAISS cannot
remove ids through a Refine wrapper or from HNSW, so those indexes are rebuilt when segments are deleted.
Recall of any choice is measured against Flat (`recall_at_k`, `bench/bench_index_recall.py`).

With faiss-gpu and a visible GPU, a factory that needs training (IVF, PQ) is trained *and filled* on the GPU,
then copied back to the CPU to be written and served; without one, or for a type FAISS has no GPU version of
(a Refine wrapper, so the 1M+ default), everything runs on the CPU with the same result up to k-means randomness.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import faiss
import numpy as np

from indexer.layout import atomic_write

FLAT_MAX_VECTORS = 50_000
HNSW_MAX_VECTORS = 1_000_000
HNSW_EF_SEARCH = 128
IVF_NPROBE = 64  # lists probed: at 1M, 32 caps R@10 at 0.68 whatever re-scores the shortlist; 64 gives 0.77
REFINE_K_FACTOR = 4  # a Refine stage re-scores k x this PQ candidates (8 measured no better than 4)
TRAIN_POINTS_PER_CENTROID = 64  # faiss wants >= 39 per centroid; more than 256 buys nothing


class VectorIndexError(ValueError):
    """A factory string or training set that cannot produce an index."""


class TooFewVectorsError(VectorIndexError):
    """The factory needs more training vectors than the collection has (yet)."""


def choose_factory(num_vectors: int, dim: int) -> str:
    if num_vectors < FLAT_MAX_VECTORS:
        return "Flat"
    if num_vectors < HNSW_MAX_VECTORS:
        return "HNSW32"
    nlist = 2 ** round(math.log2(4 * math.sqrt(num_vectors)))
    return f"IVF{min(max(nlist, 1024), 65536)},PQ{pq_subquantizers(dim)},Refine(SQ8)"


def pq_subquantizers(dim: int) -> int:
    """The largest m <= 64 that divides D with at least 4 dimensions per sub-quantizer (8-bit codes)."""
    for m in range(min(64, dim // 4), 0, -1):
        if dim % m == 0:
            return m
    return 1


def default_search_params(factory: str) -> str:
    if "HNSW" in factory:
        return f"efSearch={HNSW_EF_SEARCH}"
    params = [f"nprobe={IVF_NPROBE}"] if factory.startswith("IVF") else []
    if "Refine" in factory or "RFlat" in factory:
        params.append(f"k_factor_rf={REFINE_K_FACTOR}")
    return ",".join(params)


def resolve_factory(requested: str | None, num_vectors: int, dim: int) -> str:
    """`None`/"auto" -> chosen by size; anything else is used as written (validated when built)."""
    if not requested or requested == "auto":
        return choose_factory(num_vectors, dim)
    return requested


def validate_factory(factory: str, dim: int) -> None:
    """Fail before hours of encoding, not after, on a factory string FAISS cannot parse."""
    if factory and factory != "auto":
        try:
            faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise VectorIndexError(
                f"bad FAISS factory string {factory!r}: {str(error).splitlines()[0]}"
            ) from None


def build_index(
    embeddings: np.ndarray, ids: np.ndarray, factory: str, use_gpu: bool | None = None, seed: int = 0
) -> faiss.Index:
    """Train (on a sample, when the factory needs it) and fill an IDMap2 index; embeddings [N, D] float32."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    dim = embeddings.shape[1]
    try:
        inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise VectorIndexError(
            f"bad FAISS factory string {factory!r}: {str(error).splitlines()[0]}"
        ) from None
    index = None
    if not inner.is_trained:
        sample = _training_sample(inner, embeddings, factory, seed)
        if _gpu_wanted(use_gpu):
            index = _train_and_add_on_gpu(faiss.IndexIDMap2(inner), sample, embeddings, ids)
        if index is None:
            inner.train(sample)
    if index is None:
        index = faiss.IndexIDMap2(inner)
        if len(embeddings):
            index.add_with_ids(embeddings, ids)
    apply_search_params(index, default_search_params(factory))
    return index


def _train_and_add_on_gpu(
    index: faiss.Index, sample: np.ndarray, embeddings: np.ndarray, ids: np.ndarray
) -> faiss.Index | None:
    """Train and fill a (copy of the) IDMap2 index on the GPU, then bring it back to the CPU.

    Both steps are where the GPU pays: k-means for the IVF centroids / PQ codebooks, and assigning every
    vector to its list and encoding it when adding. The index is written and served from the CPU. None when
    this index type or its parameters have no GPU version, e.g. PQ codes wider than GPU IVFPQ supports (the
    caller then does both on the CPU; `index` is only copied, never changed).
    """
    resources = faiss.StandardGpuResources()  # must outlive every use of on_gpu
    try:
        on_gpu = faiss.index_cpu_to_gpu(resources, _gpu_device(), index)
        on_gpu.train(sample)
        if len(embeddings):
            on_gpu.add_with_ids(embeddings, ids)
        return faiss.index_gpu_to_cpu(on_gpu)
    except RuntimeError:
        return None


def _training_sample(inner: faiss.Index, embeddings: np.ndarray, factory: str, seed: int) -> np.ndarray:
    needed = _min_training_points(inner)
    if len(embeddings) < needed:
        raise TooFewVectorsError(
            f"factory {factory!r} needs at least {needed} vectors to train, the collection has {len(embeddings)}; "
            "use Flat or HNSW32 until it grows"
        )
    limit = max(needed * 4, TRAIN_POINTS_PER_CENTROID * _num_centroids(inner))
    rng = np.random.default_rng(seed)
    if len(embeddings) <= limit:
        return embeddings
    return embeddings[np.sort(rng.choice(len(embeddings), limit, False))]


def _base(inner: faiss.Index) -> faiss.Index:
    """The index a Refine wrapper re-scores (itself otherwise): the part that needs training."""
    inner = faiss.downcast_index(inner)
    return faiss.downcast_index(inner.base_index) if isinstance(inner, faiss.IndexRefine) else inner


def _num_centroids(inner: faiss.Index) -> int:
    ivf = faiss.try_extract_index_ivf(inner)
    return int(ivf.nlist) if ivf is not None else 256


def _min_training_points(inner: faiss.Index) -> int:
    """Fewest points that train every quantizer in the index (IVF lists; 2^nbits PQ centroids)."""
    needed = _num_centroids(inner) if faiss.try_extract_index_ivf(inner) is not None else 1
    product_quantizer = getattr(_base(inner), "pq", None)
    return max(needed, int(product_quantizer.ksub) if product_quantizer is not None else 1)


def _gpu_wanted(use_gpu: bool | None) -> bool:
    available = hasattr(faiss, "index_cpu_to_gpu") and faiss.get_num_gpus() > 0
    return available if use_gpu is None else (use_gpu and available)


def _gpu_device() -> int:
    """This process's GPU: LOCAL_RANK under torchrun (each rank of a sharded build has its own), else the first."""
    return int(os.environ.get("LOCAL_RANK", "0")) % max(faiss.get_num_gpus(), 1)


def apply_search_params(index: faiss.Index, params: str) -> None:
    """Apply a FAISS parameter string such as "efSearch=128" or "nprobe=16" (IDMap2 is seen through)."""
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)


def index_ids(index: faiss.Index) -> np.ndarray:
    """The segment ids stored in an IDMap index, int64 [N]."""
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def supports_removal(index: faiss.Index) -> bool:
    """FAISS cannot remove from an HNSW graph or through a Refine wrapper; those are rebuilt instead."""
    inner = type(faiss.downcast_index(index.index)).__name__
    return "HNSW" not in inner and "Refine" not in inner


def empty_index(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def write_index(index: faiss.Index, path: Path) -> None:
    atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))


def read_index(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k] float32, ids [Q, k] int64); missing neighbours are id -1 with score -inf."""
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    scores = scores.astype(np.float32)
    scores[ids < 0] = -np.inf
    return scores, ids.astype(np.int64)


def recall_at_k(approximate_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k that the approximate top-k found ([Q, >=k] id arrays)."""
    hits = [
        len(set(a[:k].tolist()) & set(e[:k].tolist()))
        for a, e in zip(approximate_ids, exact_ids, strict=True)
    ]
    return float(np.mean(hits) / k)
