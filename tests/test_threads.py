"""The process's threading policy (engine.core.threads): what it sets, on this machine's cores."""

from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from engine.core.errors import NfpError
from engine.core.threads import THREADS_ENV, apply_thread_policy, search_threads, usable_cores
from engine.library.index import VectorIndex


def test_openmp_gets_every_core_numpys_blas_one_thread_and_a_search_one():
    cores = usable_cores()
    assert apply_thread_policy() == {"openmp": cores, "blas": 1, "search": 1}
    assert torch.get_num_threads() == cores
    assert faiss.omp_get_max_threads() == cores
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    faiss_own = [pool for pool in blas if "faiss" in Path(pool["filepath"]).parent.name]
    assert faiss_own, "the faiss-cpu wheel brings its own OpenBLAS"
    assert all(pool["num_threads"] == 1 for pool in blas if pool not in faiss_own)


def test_a_search_runs_faiss_on_one_thread_and_leaves_the_threads_as_they_were():
    faiss.omp_set_num_threads(2)
    rows = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    index = VectorIndex.build(rows / np.linalg.norm(rows, axis=1, keepdims=True), "Flat")
    seen = []

    class Watched:  # the faiss index, noting how many threads faiss may use when it searches
        def search(self, queries, k):
            seen.append(faiss.omp_get_max_threads())
            return inner.search(queries, k)

    inner, index.index = index.index, Watched()
    _, ids = index.search(rows[:3], 5)
    assert seen == [1] and (ids[:, 0] == [0, 1, 2]).all()
    assert faiss.omp_get_max_threads() == 2
    with search_threads():
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == 2


def test_nfp_threads_caps_a_process_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")  # what each `nfp index --workers N` worker gets
    assert usable_cores() == 1
    monkeypatch.setenv(THREADS_ENV, "none")
    with pytest.raises(NfpError, match="NFP_THREADS='none'"):
        usable_cores()
