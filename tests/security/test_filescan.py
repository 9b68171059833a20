"""The model-file scanner refuses every malicious sample and accepts every benign one."""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path

import pytest

from bastion.errors import InvalidInput, UnsafeFileError
from bastion.security.filescan import scan_bytes, scan_file
from tests.conftest import Cli
from tests.security.pickle_corpus import BENIGN_NAMES, build_benign, build_malicious

SRC = Path(__file__).resolve().parents[2] / "src"

#: What each malicious sample must be caught importing (the offending import).
OFFENDING = {
    "os_system.pkl": "posix.system",
    "subprocess.pkl": "subprocess.Popen",
    "eval.pkl": "builtins.eval",
    "exec.pkl": "builtins.exec",
    "getattr_chain.pkl": "builtins.getattr",
    "dunder_import.pkl": "builtins.__import__",
    "importlib.pkl": "importlib.import_module",
    "runpy.pkl": "runpy.run_path",
    "nested_loads.pkl": "_pickle.loads",
    "numpy_chain.pkl": "numpy.testing._private.utils.runstring",
    "ctypes.pkl": "ctypes.CDLL",
    "extension_registry.pkl": "copyreg extension registry",
    "gzip_os_system.pkl.gz": "posix.system",
    "torch_zip.pt": "posix.system",
    "object.npy": "object array",
    "object.npz": "object array",
    "joblib.joblib": "posix.system",
}


@pytest.fixture(scope="module")
def malicious(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_malicious(tmp_path_factory.mktemp("malicious"))


@pytest.fixture(scope="module")
def benign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_benign(tmp_path_factory.mktemp("benign"))


def test_corpus_is_large_enough(malicious: dict[str, Path], benign: dict[str, Path]) -> None:
    assert len(malicious) >= 12
    assert len(benign) >= 6
    assert set(malicious) == set(OFFENDING)


@pytest.mark.parametrize("name", sorted(OFFENDING))
def test_malicious_file_is_refused_naming_the_import(malicious: dict[str, Path], name: str) -> None:
    with pytest.raises(UnsafeFileError) as info:
        scan_file(malicious[name])
    assert str(malicious[name]) in str(info.value)
    assert any(OFFENDING[name] in reason for reason in info.value.reasons), info.value.reasons


@pytest.mark.parametrize("name", BENIGN_NAMES)
def test_benign_file_is_accepted(benign: dict[str, Path], name: str) -> None:
    report = scan_file(benign[name])
    assert report.safe and not report.unsafe


def test_state_dict_report_lists_its_imports(benign: dict[str, Path]) -> None:
    report = scan_file(benign["batchnorm_state_dict.pth"])
    assert report.file_format == "pytorch-zip"
    assert {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch.LongStorage",
    } <= set(report.imports)


def test_garbage_and_unknown_archives_are_refused(tmp_path: Path) -> None:
    assert not scan_bytes(b"\x80\x04\x95garbage", name="x").safe
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.py", "import os")
    assert not scan_bytes(buffer.getvalue(), name="x.zip").safe
    with pytest.raises(InvalidInput):
        scan_file(tmp_path / "missing.pt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsafeFileError, match="TorchScript"):
        scan_file(path)


def test_cli_scan_file(cli: Cli, malicious: dict[str, Path], benign: dict[str, Path]) -> None:
    ok = cli("scan-file", benign["mlp_state_dict.pt"], benign["weights.npy"])
    assert ok.code == 0 and ok.stdout.count("safe ") == 2
    bad = cli("scan-file", malicious["subprocess.pkl"])
    assert bad.code == 1
    assert "subprocess.Popen" in bad.stderr and str(malicious["subprocess.pkl"]) in bad.stderr
    mixed = cli("scan-file", benign["weights.npy"], malicious["eval.pkl"], malicious["ctypes.pkl"])
    assert mixed.code == 1 and "2 of 3 files refused" in mixed.stderr


_UNSAFE_CALL = re.compile(r"\b(pickle|cPickle|_pickle|dill|joblib)\.loads?\(|\bUnpickler\(")
_TORCH_LOAD = re.compile(r"\btorch\.load\(([^)]*)\)")


def test_source_never_unpickles() -> None:
    """Bastion never calls pickle.load, and torch.load only with weights_only=True."""
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        offenders += [f"{path}: {m.group(0)}" for m in _UNSAFE_CALL.finditer(text)]
        offenders += [
            f"{path}: {m.group(0)}"
            for m in _TORCH_LOAD.finditer(text)
            if "weights_only=True" not in m.group(1)
        ]
    assert offenders == []


class _PersistentPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        return ("storage", "0") if obj == "tensor" else None


def test_persistent_ids_outside_a_pytorch_zip_are_refused() -> None:
    buffer = io.BytesIO()
    _PersistentPickler(buffer, protocol=2).dump({"w": "tensor"})
    binary = scan_bytes(buffer.getvalue(), name="x.pkl")
    assert not binary.safe and "persistent ids (['BINPERSID'])" in binary.reasons[0]
    text = scan_bytes(b"(dp0\nVw\np1\nPstorage-0\np2\ns.", name="y.pkl")  # protocol 0
    assert not text.safe and "persistent ids (['PERSID'])" in text.reasons[0]


def test_a_legacy_torch_file_is_refused_for_its_persistent_ids(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFileError, match="persistent ids"):
        scan_file(path)


def _torch_zip_plus(extra: dict[str, bytes]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        for name, data in extra.items():
            target.writestr(name, data)
    return out.getvalue()


def test_a_pytorch_zip_is_accepted_only_with_the_members_the_loader_expects() -> None:
    assert scan_bytes(_torch_zip_plus({}), name="ok.pt").safe
    shadow = pickle.dumps({"w": 1}, protocol=2)
    for name, why in (
        ("archive/DATA.PKL", "appears more than once"),
        ("archive/Data.pkl", "appears more than once"),
        ("archive/extra.txt", "not a member a PyTorch checkpoint has"),
        ("archive/data/not-a-key", "not a member a PyTorch checkpoint has"),
        ("other/data.pkl", "outside one top folder"),
    ):
        report = scan_bytes(_torch_zip_plus({name: shadow}), name="x.pt")
        assert not report.safe, name
        assert any(why in reason for reason in report.reasons), (name, report.reasons)
