"""Where a library's fingerprints are made: in this process, or on Dask workers.

Either way each file goes through `decode_file` (hash, decode, tags) and the encoder (here its
batches are shared out to the cores, on a worker `fingerprint_file` does both) and comes back as
a `FileFingerprints`; the one writer (engine.library.indexing) stores the results as they
arrive, so every promise of docs/reliability.md holds whichever source made them. A source is a
generator: closing it (the writer stops, is cancelled or fails) drops the work still pending.

`dask_source` imports `distributed` (the `cluster` extra) when it is called, never before: without
`--workers` / `--scheduler` nothing here loads Dask.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from engine.core.audio import SAMPLE_RATE, frame_segments, load_audio
from engine.core.errors import CheckpointError, NfpError
from engine.core.threads import THREADS_ENV, usable_cores
from engine.library.scan import ScannedFile, content_hash, read_tags
from engine.model.checkpoint import Checkpoint
from engine.model.fingerprint import Fingerprinter, blank_silence
from engine.model.load import load_checkpoint
from engine.model.precision import requested_precision

if TYPE_CHECKING:
    import distributed

FUTURES_PER_WORKER = 4  # keeps workers busy; a million files never become a million futures
# Files started ahead of the one being stored, per core: enough that a core finds a decoded
# file's batches to encode while others decode, few enough that decoded audio waiting for its
# encoder (9.6 MB for 5 min) does not pile up in memory.
FILES_AHEAD_PER_CORE = 2
CONNECT_TIMEOUT_S = 10  # a scheduler that does not answer in this time is reported unreachable
WORKER_DIED = "the worker fingerprinting it died"


@dataclass(frozen=True)
class FileFingerprints:
    """One file's contribution to a library, as a worker returns it to the writer."""

    digest: str  # content hash: how a moved or renamed file is recognised
    tags: dict  # title, artist, album, duration_s (empty when fp is None)
    fp: np.ndarray | None  # float32 (n_segments, d); None: its content is stored already
    audio_s: float  # seconds of audio fingerprinted (0 when fp is None)


class FingerprintSource(Protocol):
    """Makes the fingerprints of files for a library; `checkpoint` is the one it runs."""

    checkpoint: Checkpoint

    def fingerprints(
        self, files: Sequence[ScannedFile], stored_digests: frozenset[str]
    ) -> Iterator[tuple[ScannedFile, FileFingerprints | Exception]]:
        """Each file once, with its fingerprints or the exception that is its skip reason."""
        ...


@dataclass(frozen=True)
class DecodedFile:
    """A file read and decoded, before its encoder runs."""

    digest: str
    tags: dict
    audio: np.ndarray | None  # float32 (n,) at SAMPLE_RATE; None: its content is stored already


def fingerprint_file(
    path: Path, fingerprinter: Fingerprinter, stored_digests: frozenset[str]
) -> FileFingerprints:
    """A file's content hash, tags and fingerprints float32 (n_segments, d); a file whose hash
    is among `stored_digests` (a track that moved) is not decoded at all. NfpError names the
    file and the cause."""
    return encode_file(decode_file(path, stored_digests), fingerprinter)


def decode_file(path: Path, stored_digests: frozenset[str]) -> DecodedFile:
    """The first half of `fingerprint_file`: hash, decode, tags."""
    try:
        digest = content_hash(path)
    except OSError as e:
        raise NfpError(f"{path}: cannot read ({e.strerror or e})") from e
    if digest in stored_digests:
        return DecodedFile(digest, {}, None)
    audio = load_audio(path)
    return DecodedFile(digest, read_tags(path, len(audio) / SAMPLE_RATE), audio)


def encode_file(decoded: DecodedFile, fingerprinter: Fingerprinter) -> FileFingerprints:
    """The second half of `fingerprint_file`: the encoder."""
    fp = None if decoded.audio is None else fingerprinter.audio(decoded.audio)
    return file_fingerprints(decoded, fp)


def file_fingerprints(decoded: DecodedFile, fp: np.ndarray | None) -> FileFingerprints:
    """What the writer stores of a decoded file and its fingerprints float32 (n, d) (None where
    its content is stored already): those of its silent segments zeroed (blank_silence)."""
    if decoded.audio is None:
        return FileFingerprints(decoded.digest, {}, None, 0.0)
    stored = blank_silence(fp, decoded.audio)
    return FileFingerprints(decoded.digest, decoded.tags, stored, len(decoded.audio) / SAMPLE_RATE)


def as_source(fingerprinter: Fingerprinter | FingerprintSource) -> FingerprintSource:
    """A Fingerprinter runs in this process; a source stays what it is."""
    return LocalSource(fingerprinter) if isinstance(fingerprinter, Fingerprinter) else fingerprinter


class LocalSource:
    """Fingerprints in this process on every usable core. Each file is hashed and decoded in a
    worker thread, which then queues its encoder batches (log-mels and encoder calls on one
    core) for whichever worker is free (PyAV, numpy's FFT and ONNX Runtime free the GIL); the
    results come back in file order. On two cores, one encoder call on both cost 20 % more CPU
    time a segment here than two calls on one each; and with a whole file per worker, a long
    file kept one core busy while the other waited at the end of a scan (0.9 of 10 s for 10
    Wesnoth tracks) and whenever the files started ahead of it were done. Torch's threads are
    per process, so a torch encoder keeps the former way: the next file decoding in a thread
    while this one's encoder runs here on every core."""

    def __init__(self, fingerprinter: Fingerprinter) -> None:
        self.fingerprinter = fingerprinter
        self.checkpoint = fingerprinter.checkpoint
        self._one_core: Fingerprinter | None = None

    def fingerprints(
        self, files: Sequence[ScannedFile], stored_digests: frozenset[str]
    ) -> Iterator[tuple[ScannedFile, FileFingerprints | Exception]]:
        if self.checkpoint.backend != "onnx":
            yield from self._decode_ahead(files, stored_digests)
            return
        workers = usable_cores()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="nfp-fingerprint")
        decode = functools.partial(_decode_and_queue, fingerprinter=self._one_core_fingerprinter(),
                                   pool=pool, stored_digests=stored_digests)  # fmt: skip
        jobs = ((f, pool.submit(decode, f.path)) for f in files)
        try:
            for f, job in _ahead(jobs, FILES_AHEAD_PER_CORE * workers):
                yield f, _attempt(lambda job=job: _gathered(*job.result()))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _one_core_fingerprinter(self) -> Fingerprinter:
        """The fingerprinter's checkpoint and precision, each encoder call on one core."""
        if self._one_core is None:
            self._one_core = Fingerprinter(
                self.checkpoint,
                batch_segments=self.fingerprinter.batch_segments,
                precision=self.fingerprinter.precision.requested,
                threads=1,
            )
        return self._one_core

    def _decode_ahead(
        self, files: Sequence[ScannedFile], stored_digests: frozenset[str]
    ) -> Iterator[tuple[ScannedFile, FileFingerprints | Exception]]:
        pool = ThreadPoolExecutor(1, thread_name_prefix="nfp-decode")
        jobs = ((f, pool.submit(decode_file, f.path, stored_digests)) for f in files)
        try:
            for f, job in _ahead(jobs, 1):
                yield f, _attempt(lambda job=job: encode_file(job.result(), self.fingerprinter))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ahead(items: Iterator, n: int) -> Iterator:
    """The items of an iterator, each taken from it `n` steps before it is handed on (so the
    work each one stands for has started)."""
    window = collections.deque(itertools.islice(items, n))
    for item in items:
        window.append(item)
        yield window.popleft()
    yield from window


def _decode_and_queue(
    path: Path,
    *,
    fingerprinter: Fingerprinter,
    pool: ThreadPoolExecutor,
    stored_digests: frozenset[str],
) -> tuple[DecodedFile, list[Future]]:
    """A file decoded, and its encoder batches queued on `pool` (none for a moved file)."""
    decoded = decode_file(path, stored_digests)
    if decoded.audio is None:
        return decoded, []
    segments = frame_segments(decoded.audio)
    step = fingerprinter.batch_segments
    batches = (segments[i : i + step] for i in range(0, len(segments), step))
    return decoded, [pool.submit(fingerprinter.segments, batch) for batch in batches]


def _gathered(decoded: DecodedFile, batches: list[Future]) -> FileFingerprints:
    """A decoded file with its batches' fingerprints, once every batch is done."""
    fp = np.concatenate([batch.result() for batch in batches]) if batches else None
    return file_fingerprints(decoded, fp)


def _attempt(work: Callable[[], FileFingerprints]) -> FileFingerprints | Exception:
    """The work's result, or the exception it raised (KeyboardInterrupt still propagates)."""
    try:
        return work()
    except Exception as e:
        return e


# ---- Dask ------------------------------------------------------------------------------------
@contextlib.contextmanager
def dask_source(
    checkpoint: Checkpoint, *, workers: int | None = None, address: str | None = None
) -> Iterator[DaskSource]:
    """A source on `workers` new local worker processes, or on the cluster whose scheduler is at
    `address` (its workers must read the same paths and checkpoint). Closes what it started."""
    distributed = _import_distributed("fingerprinting on Dask workers")
    with contextlib.ExitStack() as stack:
        if address is None:
            cluster = stack.enter_context(_local_cluster(distributed, workers or 1))
            address = cluster.scheduler_address
        client = stack.enter_context(_connect(distributed, address))
        yield DaskSource(checkpoint, client)


def connect(address: str) -> distributed.Client:
    """A client of the Dask cluster whose scheduler is at address (tcp://HOST:8786)."""
    return _connect(_import_distributed("searching on Dask workers"), address)


def _import_distributed(purpose: str):
    try:
        import distributed
    except ImportError as e:
        raise NfpError(f"{purpose} needs distributed: pip install 'nfp[cluster]' ({e})") from e
    # Importing distributed sets its loggers to INFO: its lines about workers starting and
    # stopping would bury the progress bar, so they follow this process's level (-v shows them).
    logging.getLogger("distributed").setLevel(logging.getLogger().getEffectiveLevel())
    return distributed


def _local_cluster(distributed, n_workers: int) -> distributed.LocalCluster:
    """One single-threaded worker process per requested worker, each encoder on one core (so N
    workers do not fight over the cores), each worker holding only the file it is working on
    (a file that kills its worker then takes no queued file down with it)."""
    import dask

    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        return distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={THREADS_ENV: "1"},
        )


def _connect(distributed, address: str) -> distributed.Client:
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
    except Exception as e:  # refused, timed out, or a server that is no Dask scheduler at all,
        # whose bytes the client decodes as a message of any type and size (MemoryError…)
        cause = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        raise NfpError(f"{address}: cannot reach the Dask scheduler ({cause})") from e


@dataclass(frozen=True)
class _WorkerSpec:
    """What a worker needs to make the writer's fingerprints (a Checkpoint does not pickle)."""

    checkpoint_path: str
    backend: str
    precision: str
    weights_sha256: str


class DaskSource:
    """Fingerprints on a Dask cluster, a bounded window of files at a time, in completion
    order. A task that keeps killing its workers ends as KilledWorker: that file's skip reason."""

    def __init__(self, checkpoint: Checkpoint, client: distributed.Client) -> None:
        self.checkpoint = checkpoint
        self.client = client
        self.spec = _WorkerSpec(str(checkpoint.path), checkpoint.backend,
                                requested_precision(), checkpoint.weights_sha256)  # fmt: skip

    def fingerprints(
        self, files: Sequence[ScannedFile], stored_digests: frozenset[str]
    ) -> Iterator[tuple[ScannedFile, FileFingerprints | Exception]]:
        import distributed

        if not files:
            return
        window = FUTURES_PER_WORKER * max(1, len(self.client.nthreads()))
        # Sent to the workers once, not with every file, as the result of a task rather than
        # scattered: the scheduler recomputes a task's result that dies with its worker, while
        # scattered data dies for good and cancels every task that needs it.
        digests = self.client.submit(_same, stored_digests, pure=False)
        ahead = iter(files)
        pending: dict[str, tuple[ScannedFile, distributed.Future]] = {}  # by task key
        jobs = distributed.as_completed()
        try:
            while True:
                for f in itertools.islice(ahead, window - len(pending)):
                    job = self.client.submit(fingerprint_on_worker, str(f.path), self.spec,
                                             digests, pure=False)  # fmt: skip
                    pending[job.key] = (f, job)
                    jobs.add(job)
                if not pending:
                    return
                job = next(jobs)
                yield pending.pop(job.key)[0], _dask_outcome(job)
                job.release()
        finally:
            self.client.cancel([job for _, job in pending.values()])
            digests.release()


def _dask_outcome(job: distributed.Future) -> FileFingerprints | Exception:
    """The task's result or exception; a file that kept killing its workers is skipped, and so
    is one whose task the cluster cancelled (its scheduler restarted, say)."""
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError

    outcome = _attempt(job.result)
    if isinstance(outcome, KilledWorker):
        return NfpError(WORKER_DIED)
    if isinstance(outcome, FutureCancelledError):
        return NfpError(f"the Dask cluster cancelled its task ({outcome})")
    return outcome


def _same(value: frozenset[str]) -> frozenset[str]:
    """A task whose result is its argument: data the scheduler can make again if it is lost."""
    return value


def fingerprint_on_worker(
    path: str, spec: _WorkerSpec, stored_digests: frozenset[str]
) -> FileFingerprints | Exception:
    """A Dask task: `fingerprint_file` with this worker process's Fingerprinter. A bad file's
    exception is returned, not raised (NfpErrors pickle whole): a failed task would log a
    traceback on the worker for what is only that file's skip reason, which the writer reports."""
    return _attempt(
        lambda: fingerprint_file(Path(path), _worker_fingerprinter(spec), stored_digests)
    )


@functools.cache
def _worker_fingerprinter(spec: _WorkerSpec) -> Fingerprinter:
    """Loaded once per worker process; refused if its checkpoint is not the writer's weights."""
    checkpoint = load_checkpoint(spec.checkpoint_path, spec.backend)
    if checkpoint.weights_sha256 != spec.weights_sha256:
        raise CheckpointError(spec.checkpoint_path, "a Dask worker's copy has other weights than "
                                                    "the indexing process's")  # fmt: skip
    return Fingerprinter(checkpoint, precision=spec.precision)
