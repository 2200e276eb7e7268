"""Checks an export already passed, remembered between processes: verified against its .pt, and
its fingerprints of the probe agreeing with its reference on this machine.

Verifying an export (engine.model.onnx_backend.verify_export: the .pt read without torch, every
piece of metadata compared, the probe run through the network) took 0.09–0.12 s of the 0.5 s
that `nfp identify` takes on a 2-core AMD EPYC, on every run, for the same two files. A stamp
records that one pair of file contents (SHA-256 of the export's bytes and of the .pt's) passed
on this ONNX Runtime version; any change to either file is another pair, which is verified
again.

The reference check (engine.model.fingerprint.require_reference: the probe signal's log-mels
and 15 segments through the network, 0.05 s of CPU of each `nfp identify` there) asks whether
this machine computes what the checkpoint's own machine did. Its stamp names everything that
decides the answer: the export's bytes, the ONNX Runtime and numpy versions, the numeric path
chosen, the bytes of the engine's code between the probe and its fingerprints, and this CPU
(model name and feature flags), so a cache folder shared between machines never carries a
pass from one CPU to another. Where the CPU or the code cannot be read (not Linux; a frozen app
without its sources) nothing is remembered and the check runs on every load.

The stamps are kept by engine.core.stamps.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.core.stamps import Stamp

STAMP_VERSION = 1  # what a stamp asserts; a new meaning gets a new number
CPUINFO = Path("/proc/cpuinfo")
# What tells CPUs apart for numeric code, in the first processor's block of /proc/cpuinfo: the
# model and the instruction sets (x86: flags; ARM: Features and the part numbers). Not the
# clock, the microcode or the core's number, which change without changing a result.
CPU_FIELDS = (
    "vendor_id", "cpu family", "model", "model name", "flags",
    "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features",
)  # fmt: skip


def stamp(export_sha256: str, source_sha256: str, runtime_version: str) -> Stamp:
    """What a stamp of this export, .pt and ONNX Runtime version holds."""
    return {"version": STAMP_VERSION, "export_sha256": export_sha256,
            "source_sha256": source_sha256, "onnxruntime": runtime_version}  # fmt: skip


def reference_stamp(
    export_sha256: str, runtime_version: str, precision: str, code: Sequence[str]
) -> Stamp | None:
    """What a stamp of the reference check passed by this export (its bytes' SHA-256), on this
    ONNX Runtime version, at `precision`, by the engine modules named in `code` (imported ones),
    on this CPU holds; None where the CPU or the code cannot be told apart."""
    cpu, source = cpu_identity(), _code_sha256(code)
    if cpu is None or source is None:
        return None
    return {
        "version": STAMP_VERSION, "check": "reference", "export_sha256": export_sha256,
        "onnxruntime": runtime_version, "numpy": np.__version__, "precision": precision,
        "code_sha256": source, "cpu_sha256": hashlib.sha256(cpu.encode()).hexdigest(),
    }  # fmt: skip


@functools.cache
def cpu_identity() -> str | None:
    """This CPU's architecture, model and instruction sets, as Linux tells them for its first
    processor; None elsewhere (platform.processor() does not tell two x86 CPUs apart)."""
    try:
        with CPUINFO.open(errors="replace") as f:
            first = f.read(1 << 16).split("\n\n", 1)[0]  # one processor: a big machine has many
    except OSError:
        return None
    kept = []
    for line in first.splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() in CPU_FIELDS:
            kept.append(f"{name.strip()}: {' '.join(value.split())}")
    return "\n".join([platform.machine(), *kept]) if kept else None


def _code_sha256(modules: Sequence[str]) -> str | None:
    """SHA-256 of the source files of these imported modules, or None if one cannot be read."""
    digest = hashlib.sha256()
    for name in modules:
        file = getattr(sys.modules.get(name), "__file__", None)
        if not file:
            return None
        try:
            digest.update(Path(file).read_bytes())
        except OSError:
            return None
    return digest.hexdigest()
