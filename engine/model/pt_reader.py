"""Reading a `.pt` checkpoint without torch, to verify its ONNX export against it.

An export carries the .pt's calibration, background and reference fingerprints in its metadata,
which anyone who can write the file can edit (thresholds near zero made noise "match"). Where
torch is not installed the .pt cannot be loaded, so this module reads its payload directly:
torch.save's zip archive holds one pickle (`data.pkl`) whose tensors point at raw storage files.
The unpickler admits only plain data, tensors and their storages, as torch's weights_only does;
tensors become numpy arrays, their strides checked against the storage before any view is made.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np

from engine.core.errors import CheckpointError
from engine.model.encoder_config import EncoderConfig

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def read_pt_payload(path: Path) -> dict:
    """The checkpoint dict a `.pt` holds, tensors as numpy arrays. CheckpointError for a file
    that is not torch.save's zip format or holds anything but plain data and tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise CheckpointError(path, "not torch.save's zip format (no single data.pkl)")
            prefix = pickles[0].removesuffix("data.pkl")
            payload = _Unpickler(archive, prefix, archive.read(pickles[0])).load()
    except CheckpointError:
        raise
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError,
            ValueError, TypeError, IndexError, AttributeError) as e:  # fmt: skip
        raise CheckpointError(path, f"unreadable without torch: {type(e).__name__}: {e}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"holds a {type(payload).__name__}, not a checkpoint dict")
    return payload


def weights_digest(config: EncoderConfig, state_dict: dict[str, np.ndarray]) -> str:
    """engine.model.torch_backend.weights_sha256 of numpy weights: the same bytes in the same
    order."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for name, array in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


class _Unpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return np.dtype(STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refused: it holds {module}.{name}")

    def persistent_load(self, pid: object) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("unknown persistent id")
        _, dtype, key, _location, _numel = pid
        if not isinstance(dtype, np.dtype) or not isinstance(key, str):
            raise pickle.UnpicklingError("malformed storage reference")
        return np.frombuffer(self.archive.read(f"{self.prefix}data/{key}"), dtype)


def _rebuild_tensor(
    storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: object
) -> np.ndarray:
    """A copy of the tensor's elements; a view that would reach outside its storage (a crafted
    file) is refused before it is made."""
    if not isinstance(storage, np.ndarray) or len(size) != len(stride):
        raise ValueError("malformed tensor")
    if any(not isinstance(n, int) or n < 0 for n in (offset, *size, *stride)):
        raise ValueError("malformed tensor shape")
    if math.prod(size) == 0:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= len(storage):
        raise ValueError("tensor reaches past its storage")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * item for s in stride], writeable=False
    )
    return np.array(view)
