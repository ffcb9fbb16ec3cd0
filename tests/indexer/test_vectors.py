"""FAISS factories: size-based choice, recall against exact search, incremental edits, atomic files."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.vectors import (
    TooFewVectorsError,
    VectorIndexError,
    apply_search_params,
    build_index,
    choose_factory,
    default_search_params,
    index_ids,
    pq_subquantizers,
    read_index,
    recall_at_k,
    search,
    supports_removal,
    write_index,
)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_factory_by_collection_size():
    assert choose_factory(0, 768) == "Flat"
    assert choose_factory(49_999, 768) == "Flat"
    assert choose_factory(50_000, 768) == "HNSW32"
    assert choose_factory(5_000_000, 768) == "IVF8192,PQ64,Refine(SQ8)"
    assert choose_factory(2_000_000, 256) == "IVF4096,PQ64,Refine(SQ8)"
    assert 768 % pq_subquantizers(768) == 0 and 100 % pq_subquantizers(100) == 0
    assert default_search_params("HNSW32") == "efSearch=128"
    assert default_search_params("IVF1024,PQ64") == "nprobe=64"
    assert default_search_params("IVF1024,PQ64,Refine(SQ8)") == "nprobe=64,k_factor_rf=4"
    assert default_search_params("Flat") == ""


def test_refine_rescores_the_pq_shortlist():
    """The >= 1M default at toy scale: PQ with 2 dims per code finds the shortlist, SQ8 re-scores it."""
    base, queries = unit_vectors(4000, 32, seed=1), unit_vectors(100, 32, seed=2)
    ids = np.arange(len(base), dtype=np.int64)
    _, exact = search(build_index(base, ids, "Flat"), queries, 10)
    plain, refined = build_index(base, ids, "IVF16,PQ16"), build_index(base, ids, "IVF16,PQ16,Refine(SQ8)")
    _, plain_found = search(plain, queries, 10)
    _, refined_found = search(refined, queries, 10)
    assert recall_at_k(refined_found, exact, 1) > recall_at_k(plain_found, exact, 1) + 0.1
    assert recall_at_k(refined_found, exact, 10) > 0.9
    with pytest.raises(TooFewVectorsError, match="at least 256"):  # the PQ inside the Refine needs 2^8 points
        build_index(base[:200], ids[:200], "IVF16,PQ16,Refine(SQ8)")


def test_flat_is_exact_inner_product():
    x = unit_vectors(300, 16)
    ids = np.arange(300, dtype=np.int64) * 7 + 3
    index = build_index(x, ids, "Flat")
    scores, found = search(index, x[:5], 4)
    assert found[:, 0].tolist() == ids[:5].tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    brute = x[:5] @ x.T
    np.testing.assert_allclose(scores, -np.sort(-brute, axis=1)[:, :4], atol=1e-5)


@pytest.mark.parametrize("factory, params, minimum", [("HNSW32", "", 0.95), ("IVF32,Flat", "nprobe=16", 0.9)])
def test_approximate_recall_against_flat(factory, params, minimum):
    base, queries = unit_vectors(4000, 32, seed=1), unit_vectors(100, 32, seed=2)
    ids = np.arange(len(base), dtype=np.int64)
    _, exact = search(build_index(base, ids, "Flat"), queries, 10)
    approximate_index = build_index(base, ids, factory)
    apply_search_params(approximate_index, params)
    _, approximate = search(approximate_index, queries, 10)
    assert recall_at_k(approximate, exact, 10) >= minimum


def test_ivf_pq_builds_and_returns_valid_ids():
    base = unit_vectors(3000, 32)
    index = build_index(
        base, np.arange(3000, dtype=np.int64) + 100, "IVF16,PQ8x4"
    )  # 4-bit codes: quick to train
    _, found = search(index, base[:10], 5)
    assert ((found >= 100) & (found < 3100)).all()


def test_bad_factory_and_too_little_training_data():
    x = unit_vectors(50, 16)
    with pytest.raises(VectorIndexError, match="bad FAISS factory"):
        build_index(x, np.arange(50), "NoSuchIndex")
    with pytest.raises(VectorIndexError, match="needs at least"):
        build_index(x, np.arange(50), "IVF256,Flat")


def test_remove_and_add_keep_ids(tmp_path):
    x = unit_vectors(100, 8)
    index = build_index(x, np.arange(100, dtype=np.int64), "Flat")
    assert supports_removal(index) and not supports_removal(build_index(x, np.arange(100), "HNSW32"))
    assert not supports_removal(build_index(x, np.arange(100), "Flat,Refine(SQfp16)"))
    index.remove_ids(np.arange(50, dtype=np.int64))
    index.add_with_ids(x[:10], np.arange(1000, 1010, dtype=np.int64))
    path = tmp_path / "vectors.faiss"
    write_index(index, path)
    assert not list(tmp_path.glob("*.tmp-*"))
    loaded = read_index(path)
    assert sorted(index_ids(loaded).tolist()) == list(range(50, 100)) + list(range(1000, 1010))
    assert search(loaded, x[:1], 1)[1][0, 0] == 1000


def test_missing_neighbours_are_minus_one():
    index = build_index(unit_vectors(3, 8), np.arange(3, dtype=np.int64), "Flat")
    scores, found = search(index, unit_vectors(1, 8, seed=3), 5)
    assert found[0, 3:].tolist() == [-1, -1] and np.isneginf(scores[0, 3:]).all()
