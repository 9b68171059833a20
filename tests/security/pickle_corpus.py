"""A corpus of malicious and benign model files, built at test time.

Nothing here is ever unpickled: the malicious files are written with
``__reduce__`` tricks or hand-assembled opcodes, the way attackers build them.
"""

from __future__ import annotations

import builtins
import ctypes
import gzip
import importlib
import io
import os
import pickle
import runpy
import struct
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import torch


class _Reduce:
    """Pickles as ``func(*args)``: the classic payload."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _short_unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _getattr_chain() -> bytes:
    # getattr(__import__("os"), "system")("id"), assembled by hand.
    return (
        b"\x80\x02"
        + b"cbuiltins\ngetattr\n"
        + b"cbuiltins\n__import__\n"
        + _unicode("os")
        + b"\x85R"
        + _unicode("system")
        + b"\x86R"
        + _unicode("id")
        + b"\x85R."
    )


def _numpy_attribute_chain() -> bytes:
    # Protocol 4 resolves dotted names: numpy -> testing._private.utils.runstring.
    return (
        b"\x80\x04"
        + _short_unicode("numpy")
        + _short_unicode("testing._private.utils.runstring")
        + b"\x93"
        + _short_unicode("import os; os.system('id')")
        + b"}\x86R."
    )


def _extension_registry() -> bytes:
    # EXT1 looks a callable up in copyreg's extension registry.
    return b"\x80\x02\x82\x01" + _unicode("id") + b"\x85R."


def _torch_zip_with(payload: bytes, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2).state_dict(), buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = payload if info.filename.endswith("data.pkl") else source.read(info)
            target.writestr(info, data)


def build_malicious(root: Path) -> dict[str, Path]:
    """Write every malicious sample under ``root``; return name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "os_system.pkl": pickle.dumps(_Reduce(os.system, "id")),
        "subprocess.pkl": pickle.dumps(_Reduce(subprocess.Popen, ["id"])),
        "eval.pkl": pickle.dumps(_Reduce(builtins.eval, "1+1")),
        "exec.pkl": pickle.dumps(_Reduce(builtins.exec, "import os")),
        "getattr_chain.pkl": _getattr_chain(),
        "dunder_import.pkl": pickle.dumps(_Reduce(builtins.__import__, "os")),
        "importlib.pkl": pickle.dumps(_Reduce(importlib.import_module, "os")),
        "runpy.pkl": pickle.dumps(_Reduce(runpy.run_path, "/tmp/x.py")),
        "nested_loads.pkl": pickle.dumps(
            _Reduce(pickle.loads, pickle.dumps(_Reduce(os.system, "id")))
        ),
        "numpy_chain.pkl": _numpy_attribute_chain(),
        "ctypes.pkl": pickle.dumps(_Reduce(ctypes.CDLL, "libc.so.6")),
        "extension_registry.pkl": _extension_registry(),
        "gzip_os_system.pkl.gz": gzip.compress(pickle.dumps(_Reduce(os.system, "id"))),
    }
    paths: dict[str, Path] = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        paths[name] = root / name
    paths["torch_zip.pt"] = root / "torch_zip.pt"
    _torch_zip_with(pickle.dumps(_Reduce(os.system, "id"), protocol=2), paths["torch_zip.pt"])
    paths["object.npy"] = root / "object.npy"
    np.save(
        paths["object.npy"],
        np.array([_Reduce(os.system, "id")], dtype=object),
        allow_pickle=True,
    )
    paths["object.npz"] = root / "object.npz"
    np.savez(
        paths["object.npz"],
        ok=np.zeros(3),
        bad=np.array([_Reduce(os.system, "id")], dtype=object),
    )
    paths["joblib.joblib"] = root / "joblib.joblib"
    joblib.dump({"model": _Reduce(os.system, "id")}, paths["joblib.joblib"])
    return paths


BENIGN_NAMES = (
    "mlp_state_dict.pt",
    "batchnorm_state_dict.pth",
    "tensor.bin",
    "weights.npy",
    "arrays.npz",
    "containers.pkl",
    "containers_protocol2.pkl",
    "numpy_array.pkl",
    "plain.joblib",
    "compressed.joblib",
)


def build_benign(root: Path) -> dict[str, Path]:
    """Write every benign sample under ``root``; return name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    paths = {name: root / name for name in BENIGN_NAMES}
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.save(mlp.state_dict(), paths["mlp_state_dict.pt"])
    bn = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    torch.save(bn.state_dict(), paths["batchnorm_state_dict.pth"])
    torch.save(torch.arange(10, dtype=torch.float64), paths["tensor.bin"])
    np.save(paths["weights.npy"], np.random.default_rng(0).normal(size=(3, 4)))
    np.savez(paths["arrays.npz"], w=np.ones((2, 2)), b=np.arange(4, dtype=np.int32))
    containers = {
        "layers": [1, 2, 3],
        "name": "mlp",
        "lr": 0.1,
        "ok": True,
        "none": None,
        "pair": (1, "a"),
        "nested": {"k": [1.5, -2]},
    }
    paths["containers.pkl"].write_bytes(pickle.dumps(containers, protocol=5))
    paths["containers_protocol2.pkl"].write_bytes(
        pickle.dumps({"raw": b"\x00\x01", "tags": {"a", "b"}, "big": 2**70}, protocol=2)
    )
    paths["numpy_array.pkl"].write_bytes(pickle.dumps(np.arange(6.0).reshape(2, 3)))
    joblib.dump(containers, paths["plain.joblib"])
    joblib.dump(containers, paths["compressed.joblib"], compress=("zlib", 3))
    return paths
