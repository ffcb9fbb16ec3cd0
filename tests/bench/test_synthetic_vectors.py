"""The benchmarks' synthetic collections: float32 unit vectors (a float64 query would make numpy's floor
convert the whole base on every call), clustered around one direction per video."""

import numpy as np

from bench.synthetic import clustered_vectors, uniform_vectors


def test_clustered_base_and_queries_are_float32_unit_vectors_near_their_video():
    base, queries = clustered_vectors(200, 32, seed=0, per_video=10, num_queries=5)
    assert base.dtype == queries.dtype == np.float32
    assert base.shape == (200, 32) and queries.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(np.concatenate([base, queries]), axis=1), 1.0, rtol=1e-5)
    same_video = (base[:10] @ base[:10].T)[np.triu_indices(10, 1)]
    other_video = base[:10] @ base[10:20].T
    assert same_video.mean() > other_video.mean() + 0.3


def test_uniform_vectors_are_float32_unit_vectors():
    base = uniform_vectors(100, 16, seed=1)
    assert base.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, rtol=1e-5)
