"""Checkpoint file formats, read without running code from the file.

- torch files (zip archives and legacy pickles): torch.load(weights_only=True), which admits tensors and
  plain containers only (plus argparse.Namespace, the one object DINO's training checkpoints carry: its
  `args`; building a Namespace sets attributes and runs nothing else).
- detectron2 `.pkl` (detectron2 tools/convert-torchvision-to-d2.py, FreeSOLO tools/convert-pretrain-to-
  detectron2.py: {"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}): a
  restricted unpickler admitting only what numpy arrays and plain containers need.
- safetensors (timm, Hugging Face): parsed here (8-byte little-endian header length, a JSON header of
  dtype / shape / data_offsets per tensor, then the raw little-endian buffer); no extra dependency.

read_checkpoint returns the file's top-level object with every array as a torch.Tensor, and the format.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

# Legacy (non-zip) torch files start with pickle protocol 2 and torch's magic number, a 10-byte LONG1.
_TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a"
_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 2**20  # the safetensors spec caps the header at 100 MB
# (module, name) a detectron2 pickle may name: numpy's array reconstruction (numpy < 2 and >= 2 module
# paths; protocol 5 rebuilds arrays from a buffer) and plain containers. Nothing here runs code beyond
# building arrays, dtypes and dicts.
_PKL_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
}


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """_codecs.encode as protocol-2 pickles use it (Python 3 writes bytes as latin-1 text); no other codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"it asks for codec {encoding!r}; only latin1 byte strings are read")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _PKL_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise ValueError(f"{self.path} is a pickle that names the global {module}.{name}; maskless reads "
                         "pickles holding numpy arrays and plain containers only (detectron2 .pkl) and never "
                         "builds other objects from a file")


def sniff(path: str) -> str:
    """'safetensors', 'torch' (zip or legacy torch pickle), 'pickle' (a plain pickle) or 'unknown'."""
    with open(path, "rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(path) or head.startswith(_TORCH_LEGACY_HEAD):
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


def read_checkpoint(path: str) -> tuple[object, str]:
    """The checkpoint's top-level object (arrays as tensors) and its file format: 'torch', 'detectron2-pkl'
    (any plain pickle of numpy arrays) or 'safetensors'."""
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    kind = sniff(path)
    if kind == "safetensors":
        return read_safetensors(path), "safetensors"
    if kind == "pickle" or (kind == "unknown" and path.endswith(".pkl")):  # .pkl: also protocol 0/1 pickles
        return read_numpy_pickle(path), "detectron2-pkl"
    return read_torch(path), "torch"


def read_torch(path: str) -> object:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch.load raises IndexError, UnpicklingError, RuntimeError ... on junk)
        raise ValueError(f"{path} is not a readable torch checkpoint: {_unreadable_reason(path, e)}. maskless "
                         "loads weights only as tensors and plain containers and never runs code from a "
                         "file; give a state dict (torchvision, timm, MoCo/DenseCL, DINO or maskless format), "
                         "a detectron2 .pkl or a .safetensors file") from e


def _unreadable_reason(path: str, error: Exception) -> str:
    """Why torch.load(weights_only=True) refused `path`, in our words: torch's own message ends with advice to
    load with weights_only=False, the one thing never to do with a file one does not trust."""
    blocked = re.search(r"GLOBAL ([\w.]+)", str(error))
    if blocked:
        return (f"it holds a Python object ({blocked.group(1)}) beyond tensors and plain containers (a "
                "training checkpoint? save its model's state_dict, or use the publisher's backbone-only file)")
    with open(path, "rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(path):
        return f"a zip archive that torch cannot read as a checkpoint ({type(error).__name__})"
    return f"neither a torch zip archive nor a legacy torch pickle (it starts with {head!r})"


def read_numpy_pickle(path: str) -> object:
    """A pickle of numpy arrays in plain containers (detectron2 .pkl), arrays turned into tensors."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 (truncated or corrupt pickles raise EOFError, UnpicklingError, ...)
        raise ValueError(f"{path} is not a readable pickle of numpy arrays: {type(e).__name__}: {e}") from e
    return _to_tensors(obj)


def _to_tensors(obj: object) -> object:
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in "biufc":
            return obj  # strings, objects: not weights (left out of the state dict)
        return torch.from_numpy(np.array(obj, copy=True))  # a writable copy: pickled arrays may be read-only
    if isinstance(obj, dict):
        return {k: _to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_tensors(v) for v in obj)
    return obj


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file (the header's __metadata__ is skipped)."""
    if sys.byteorder != "little":
        raise ValueError(f"{path}: reading safetensors needs a little-endian machine")
    data = Path(path).read_bytes()
    header, start = _safetensors_header(data, path)
    buffer = memoryview(data)[start:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = _safetensors_entry(name, entry, len(buffer), path)
        raw = bytearray(buffer[begin:end])  # writable, so torch.frombuffer shares no read-only memory
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors


def _safetensors_header(data: bytes, path: str) -> tuple[dict, int]:
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors file: {len(data)} bytes, shorter than its header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(_MAX_HEADER, len(data) - 8):
        raise ValueError(f"{path} is a malformed safetensors file: header length {n} exceeds the file "
                         f"({len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is a malformed safetensors file: its header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path} is a malformed safetensors file: its header is a {type(header).__name__}, "
                         "not an object")
    return header, 8 + n


def _safetensors_entry(name: str, entry: object, size: int, path: str):
    bad = f"{path} is a malformed safetensors file: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise ValueError(f"{bad} lacks dtype, shape or data_offsets")
    dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"{bad} has dtype {entry['dtype']!r}; readable: {sorted(_SAFETENSORS_DTYPES)}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise ValueError(f"{bad} has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= size):
        raise ValueError(f"{bad} has data_offsets {offsets!r} outside its {size}-byte buffer")
    expected = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
    if offsets[1] - offsets[0] != expected:
        raise ValueError(f"{bad} spans {offsets[1] - offsets[0]} bytes; dtype {entry['dtype']} shape {shape} "
                         f"needs {expected}")
    return dtype, shape, offsets


def is_detectron2_resnet(keys: list[str]) -> bool:
    """detectron2's ResNet names: stem.conv1.* and res2..res5.<block>.*"""
    return any(k.startswith("stem.") for k in keys) and any(_D2_BLOCK.match(k) for k in keys)


_D2_BLOCK = re.compile(r"^res([2-5])\.(\d+)\.(.+)$")


def detectron2_to_torchvision(key: str) -> str:
    """detectron2 ResNet key -> torchvision's (the inverse of detectron2's convert-torchvision-to-d2.py):
    stem.conv1.norm.* -> bn1.*; stem.<rest> -> <rest>; resN.i.convK.norm.* -> layer{N-1}.i.bnK.*;
    resN.i.shortcut.norm.* -> layer{N-1}.i.downsample.1.*; resN.i.shortcut.* -> layer{N-1}.i.downsample.0.*"""
    if key.startswith("stem."):
        rest = key[len("stem."):]
        return re.sub(r"^conv1\.norm\.", "bn1.", rest)
    found = _D2_BLOCK.match(key)
    if not found:
        return key
    stage, block, rest = found.groups()
    rest = re.sub(r"^conv([1-3])\.norm\.", r"bn\1.", rest)
    rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
    rest = re.sub(r"^shortcut\.", "downsample.0.", rest)
    return f"layer{int(stage) - 1}.{block}.{rest}"


__all__ = ["read_checkpoint", "read_torch", "read_numpy_pickle", "read_safetensors", "sniff",
           "is_detectron2_resnet", "detectron2_to_torchvision"]
