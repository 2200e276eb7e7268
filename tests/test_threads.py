"""The process's threading policy (engine.core.threads): what it sets, on this machine's cores."""

from pathlib import Path

import faiss
import pytest
import torch
from threadpoolctl import threadpool_info

from engine.core.errors import NfpError
from engine.core.threads import THREADS_ENV, apply_thread_policy, usable_cores


def test_openmp_and_faiss_blas_get_every_core_and_other_blas_one_thread():
    cores = usable_cores()
    assert apply_thread_policy() == {"openmp": cores, "blas": 1, "faiss_blas": cores}
    assert torch.get_num_threads() == cores
    assert faiss.omp_get_max_threads() == cores
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    faiss_own = [pool for pool in blas if "faiss" in Path(pool["filepath"]).parent.name]
    assert faiss_own, "the faiss-cpu wheel brings its own OpenBLAS"
    assert all(pool["num_threads"] == cores for pool in faiss_own)
    assert all(pool["num_threads"] == 1 for pool in blas if pool not in faiss_own)


def test_nfp_threads_caps_a_process_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")  # what each `nfp index --workers N` worker gets
    assert usable_cores() == 1
    monkeypatch.setenv(THREADS_ENV, "none")
    with pytest.raises(NfpError, match="NFP_THREADS='none'"):
        usable_cores()
