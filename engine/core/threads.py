"""One threading policy for the whole process: the `nfp` command, the desktop app (GUI thread and
workers) and the indexer alike.

An nfp process holds three kinds of thread pool: the encoder's (ONNX Runtime's own, set per
session in engine.model.onnx_backend, or torch's OpenMP in engine.model.torch_backend), faiss's
OpenMP, and OpenBLAS (numpy's, for the noise floor's matrix products, and faiss's own copy). Each
pool spins a while after its work, waiting for more, so on two cores a pool waking between two
others' regions fights them.
Measured here with the encoder on torch (2-core Xeon, 2.1 h library, shipped d = 128, ten
repeats of `Recognizer.identify`):

    OpenMP threads  BLAS threads   1 s query p50/p95   5 s query p50/p95   10 s query p50/p95
    2 (default)     2 (default)    16 / 143 ms         198 / 230 ms        341 / 398 ms
    2               1              8 / 9 ms            123 / 128 ms        279 / 291 ms
    1               1              15 / 20 ms          198 / 214 ms        459 / 483 ms

So the encoder and faiss's index building get every usable core (the encoder is where a
query's and an index's time goes; a search takes one thread, below) and numpy's BLAS one
thread (its work per call is a few small matrix products, not worth waking a pool for). ONNX
Runtime's pool does not spin after a call (engine.model.onnx_backend), so it leaves the cores
to the search that follows; with it,
`nfp identify` of a 5 s file takes 38-42 / 42-44 ms (p50 / p95) on the same library.

faiss's own OpenBLAS (the faiss-cpu wheel's) is built on faiss's OpenMP and takes its thread
count from it. Its one matrix product per query is the exact search of a library of up to 35 h
(engine.library.index), 18 × 68,000 inner products for a 5 s query against 9.4 h: 10.7 ms on
one thread, 6.3 on two on an idle 2-core AMD EPYC. But on a machine whose cores are busy with
other work, the threads of a parallel search wait for each other at every step: with two
training jobs on both cores, that search took 1,190 ms on two threads and 23 ms on one, and a
5 s query's `Recognizer.identify` on the 9.4 h library 3.2 s against 0.18 s (a query whose
shifts disagree: three searches). A desktop app shares its machine, so every search runs on one
thread (search_threads, around each call in engine.library.index: OpenMP's count is per calling
thread, and the app searches from worker threads); building an index (the IVF's training, the
codes) keeps every core. The encoder's calls still run one per core
(engine.model.fingerprint), which a busy core slows but does not stall.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import faiss
from threadpoolctl import ThreadpoolController

from engine.core.errors import NfpError

# Cores one process may use, when set: each of N Dask workers on one machine gets 1
THREADS_ENV = "NFP_THREADS"
SEARCH_THREADS = 1  # faiss threads of a search: see above


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (which containers and taskset narrow),
    or fewer where $NFP_THREADS asks for fewer (more threads than cores only fight)."""
    cores = _affinity_cores()
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return cores
    # isdecimal, not isdigit: "²" is a digit that int() refuses
    if not value.isdecimal() or int(value) < 1:
        raise NfpError(f"{THREADS_ENV}={value[:20]!r}: expected a number of threads, 1 or more")
    return min(int(value), cores)


def _affinity_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name where Linux tells it (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def apply_thread_policy() -> dict[str, int]:
    """Set the policy (once per process; later calls return what was set)."""
    cores = usable_cores()
    blas = ThreadpoolController().select(user_api="blas")
    for pool in blas.lib_controllers:
        if not _runs_on_faiss_pool(pool.filepath):  # faiss's follows its OpenMP, set below
            pool.set_num_threads(1)
    faiss.omp_set_num_threads(cores)  # building indexes; searches take SEARCH_THREADS
    # faiss answers fewer than 20 queries with its own loop over rows and one matrix product
    # for more; a query's 9-50 segments against a 2 h library took 4.8 ms that way, 1.6 ms as
    # one sgemm.
    faiss.cvar.distance_compute_blas_threshold = 1
    return {"openmp": cores, "blas": 1, "search": SEARCH_THREADS}


@contextlib.contextmanager
def search_threads() -> Iterator[None]:
    """faiss (and its OpenBLAS) on SEARCH_THREADS in this thread for the block, then as it was."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(SEARCH_THREADS)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _runs_on_faiss_pool(library: str) -> bool:
    """Whether a BLAS library file is faiss's own OpenBLAS (the faiss-cpu wheel's, built on its
    OpenMP): its threads are faiss's pool."""
    return "faiss" in Path(library).parent.name
