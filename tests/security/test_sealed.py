"""Sealed directories: every check of open_sealed refuses its own kind of tampering."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bastion.errors import IntegrityError, NotFound, SignatureError
from bastion.security.keys import Keyring
from bastion.security.sealed import MANIFEST, open_sealed, seal
from tests.conftest import other_keyring


def _files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "plain").mkdir()
    weights, config = tmp_path / "plain" / "w", tmp_path / "plain" / "c"
    weights.write_bytes(bytes(range(256)) * 100)
    config.write_text('{"hidden": [8]}')
    return {"weights.safetensors": weights, "model.json": config}


def _open(root: Path, keyring: Keyring, manifest_hash: str, into: Path | None = None) -> None:
    open_sealed(
        root,
        keyring=keyring,
        artifact="model",
        project="p",
        name="m",
        manifest_hash=manifest_hash,
        into=into,
    )


def test_seal_and_open_round_trip(keyring: Keyring, tmp_path: Path) -> None:
    files = _files(tmp_path)
    sealed = seal(
        files,
        root=tmp_path / "s",
        keyring=keyring,
        artifact="model",
        project="p",
        name="m",
        kind="pytorch",
    )
    assert sealed.directory == tmp_path / "s" / "models" / "p" / "m" / sealed.manifest_hash
    stored = sorted(p.name for p in sealed.directory.iterdir())
    assert stored == [
        "manifest.json",
        "manifest.json.sig",
        "model.json.bst",
        "weights.safetensors.bst",
    ]
    assert b"hidden" not in (sealed.directory / "model.json.bst").read_bytes()
    _open(tmp_path / "s", keyring, sealed.manifest_hash, into=tmp_path / "out")
    assert (tmp_path / "out" / "weights.safetensors").read_bytes() == files[
        "weights.safetensors"
    ].read_bytes()


@pytest.mark.parametrize("tamper", ["ciphertext", "manifest", "extra", "missing", "swap", "resign"])
def test_every_kind_of_tampering_is_refused(keyring: Keyring, tmp_path: Path, tamper: str) -> None:
    root = tmp_path / "s"
    files = _files(tmp_path)
    first = seal(
        files, root=root, keyring=keyring, artifact="model", project="p", name="m", kind="pytorch"
    )
    second = seal(
        files, root=root, keyring=keyring, artifact="model", project="p", name="m", kind="pytorch"
    )
    target = first.directory
    expected: type[Exception] = IntegrityError
    if tamper == "ciphertext":
        blob = bytearray((target / "weights.safetensors.bst").read_bytes())
        blob[-100] ^= 1
        (target / "weights.safetensors.bst").write_bytes(bytes(blob))
    elif tamper == "manifest":
        body = (target / MANIFEST).read_text().replace('"kind":"pytorch"', '"kind":"other"')
        (target / MANIFEST).write_text(body)
    elif tamper == "extra":
        (target / "backdoor.py").write_text("import os")
    elif tamper == "missing":
        (target / "model.json.bst").unlink()
    elif tamper == "swap":  # a validly encrypted file of another sealed copy
        shutil.copy(
            second.directory / "weights.safetensors.bst", target / "weights.safetensors.bst"
        )
    else:  # a manifest re-signed by another cluster's key
        from bastion.security.signing import sign_path

        sign_path(target / MANIFEST, keyring=other_keyring(tmp_path / "other"))
        expected = SignatureError
    with pytest.raises(expected):
        _open(root, keyring, first.manifest_hash, into=tmp_path / "out")
    assert not (tmp_path / "out" / "weights.safetensors").exists()
    with pytest.raises(NotFound):
        _open(root, keyring, "0" * 64)


def test_a_sealed_dataset_is_not_a_model(keyring: Keyring, tmp_path: Path) -> None:
    files = _files(tmp_path)
    sealed = seal(
        files,
        root=tmp_path / "s",
        keyring=keyring,
        artifact="model",
        project="p",
        name="m",
        kind="pytorch",
    )
    moved = tmp_path / "s" / "datasets" / "p" / "m"
    moved.mkdir(parents=True)
    shutil.copytree(sealed.directory, moved / sealed.manifest_hash)
    with pytest.raises(IntegrityError, match="belongs to model"):
        open_sealed(
            tmp_path / "s",
            keyring=keyring,
            artifact="dataset",
            project="p",
            name="m",
            manifest_hash=sealed.manifest_hash,
        )
