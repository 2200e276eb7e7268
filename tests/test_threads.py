"""The process's threading policy (engine.core.threads): what it sets, on this machine's cores."""

import faiss
import pytest
import torch
from threadpoolctl import threadpool_info

from engine.core.errors import NfpError
from engine.core.threads import THREADS_ENV, apply_thread_policy, usable_cores


def test_openmp_gets_every_core_and_blas_one_thread():
    assert apply_thread_policy() == {"openmp": usable_cores(), "blas": 1}
    assert torch.get_num_threads() == usable_cores()
    assert faiss.omp_get_max_threads() == usable_cores()
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_nfp_threads_caps_a_process_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "1")  # what each `nfp index --workers N` worker gets
    assert usable_cores() == 1
    monkeypatch.setenv(THREADS_ENV, "none")
    with pytest.raises(NfpError, match="NFP_THREADS='none'"):
        usable_cores()
