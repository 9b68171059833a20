"""model-signing signatures: accepted by the upstream tool, and every change refused."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.errors import InvalidInput, SignatureError
from bastion.security.keys import Keyring
from bastion.security.signing import sign_path, signature_path_for, verify_path
from tests.conftest import Cli, other_keyring

UPSTREAM = Path(sys.executable).with_name("model_signing")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (root / "config.json").write_text('{"hidden": [8]}')
    (root / "README.md").write_text("a model\n")
    return root


def test_sign_and_verify_directory(keyring: Keyring, model: Path) -> None:
    signature = sign_path(model, keyring=keyring)
    assert signature == model.with_name("model.sig")
    result = verify_path(model, keyring=keyring)
    assert result.files == 3
    assert result.key_fingerprint == keyring.primary_signing_key().fingerprint


def test_sign_and_verify_single_file(keyring: Keyring, model: Path) -> None:
    target = model / "config.json"
    signature = sign_path(target, keyring=keyring)
    assert signature == signature_path_for(target) == model / "config.json.sig"
    assert verify_path(target, keyring=keyring).files == 1
    target.write_text('{"hidden": [9]}')
    with pytest.raises(SignatureError, match="changed"):
        verify_path(target, keyring=keyring)


def _mutations() -> dict[str, tuple[Callable[[Path], None], str]]:
    def changed_byte(root: Path) -> None:
        path = root / "weights" / "model.safetensors"
        data = bytearray(path.read_bytes())
        data[100] ^= 1
        path.write_bytes(bytes(data))

    def added(root: Path) -> None:
        (root / "weights" / "extra.bin").write_bytes(b"x")

    def added_git_file(root: Path) -> None:
        (root / ".gitattributes").write_text("* binary")

    def removed(root: Path) -> None:
        (root / "README.md").unlink()

    def renamed(root: Path) -> None:
        (root / "config.json").rename(root / "config2.json")

    def moved_between_dirs(root: Path) -> None:
        (root / "config.json").rename(root / "weights" / "config.json")

    return {
        "changed byte": (changed_byte, "changed: weights/model.safetensors"),
        "added file": (added, "added or renamed: weights/extra.bin"),
        "added git file": (added_git_file, "added or renamed: .gitattributes"),
        "removed file": (removed, "removed or renamed: README.md"),
        "renamed file": (renamed, "config2.json"),
        "moved file": (moved_between_dirs, "weights/config.json"),
    }


@pytest.mark.parametrize("name", list(_mutations()))
def test_any_change_is_refused(keyring: Keyring, model: Path, name: str) -> None:
    mutate, expected = _mutations()[name]
    sign_path(model, keyring=keyring)
    mutate(model)
    with pytest.raises(SignatureError, match=expected):
        verify_path(model, keyring=keyring)


def test_wrong_key_is_refused(keyring: Keyring, model: Path, tmp_path: Path) -> None:
    sign_path(model, keyring=other_keyring(tmp_path / "elsewhere"))
    with pytest.raises(SignatureError, match="not trusted here"):
        verify_path(model, keyring=keyring)
    # Naming the other key explicitly does not help a forged claim either.
    with pytest.raises(SignatureError, match="not trusted here"):
        verify_path(model, public_key_pem=keyring.primary_signing_key().public_pem)


def test_missing_signature_is_refused(keyring: Keyring, model: Path) -> None:
    with pytest.raises(SignatureError, match="no signature"):
        verify_path(model, keyring=keyring)


def _bundle(signature: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(signature.read_text())
    return loaded


def test_damaged_signature_file_is_refused(keyring: Keyring, model: Path) -> None:
    signature = sign_path(model, keyring=keyring)
    original = signature.read_bytes()
    signature.write_bytes(original[: len(original) // 2])
    with pytest.raises(SignatureError, match="damaged"):
        verify_path(model, keyring=keyring)
    # A flipped bit inside the ECDSA signature.
    bundle = json.loads(original)
    sig = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[10] ^= 1
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    signature.write_text(json.dumps(bundle))
    with pytest.raises(SignatureError, match="verification failed"):
        verify_path(model, keyring=keyring)
    # A payload rewritten to match a changed file, without re-signing.
    bundle = json.loads(original)
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["subject"][0]["name"] = "other"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    signature.write_text(json.dumps(bundle))
    with pytest.raises(SignatureError, match="verification failed"):
        verify_path(model, keyring=keyring)


def test_old_signatures_verify_after_rotation(keyring: Keyring, model: Path) -> None:
    sign_path(model, keyring=keyring)
    old = keyring.primary_signing_key().fingerprint
    keyring.rotate()
    assert keyring.primary_signing_key().fingerprint != old
    assert verify_path(model, keyring=keyring).key_fingerprint == old


def test_symlinks_are_refused(keyring: Keyring, model: Path, tmp_path: Path) -> None:
    (model / "link").symlink_to(tmp_path)
    with pytest.raises(InvalidInput, match="cannot sign"):
        sign_path(model, keyring=keyring)


def _upstream_verify(model: Path, signature: Path, pem: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(UPSTREAM),
            "verify",
            "key",
            str(model),
            "--signature",
            str(signature),
            "--public_key",
            str(pem),
            "--no-ignore-git-paths",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_upstream_model_signing_cli_accepts_our_signature(
    cli: Cli, model: Path, tmp_path: Path
) -> None:
    assert UPSTREAM.exists(), "the model_signing CLI is installed with the package"
    result = cli("sign", model)
    assert result.code == 0, result.stderr
    pem = tmp_path / "signing.pem"
    assert cli("keys", "export-public", pem).code == 0
    upstream = _upstream_verify(model, model.with_name("model.sig"), pem)
    assert upstream.returncode == 0, upstream.stdout + upstream.stderr
    assert "Verification succeeded" in upstream.stdout
    # And the upstream tool refuses the same tampering we refuse.
    shutil.copy(model / "README.md", model / "README2.md")
    upstream = _upstream_verify(model, model.with_name("model.sig"), pem)
    assert upstream.returncode != 0


def test_cli_sign_verify_exit_codes(cli: Cli, model: Path, tmp_path: Path) -> None:
    assert cli("sign", model).code == 0
    ok = cli("verify", model)
    assert ok.code == 0 and "3 file(s)" in ok.stdout
    pem = tmp_path / "k.pem"
    assert cli("keys", "export-public", pem).code == 0
    assert cli("verify", model, "--public-key", pem).code == 0
    (model / "config.json").write_text("{}")
    bad = cli("verify", model)
    assert bad.code == 1
    assert "config.json" in bad.stderr and str(model) in bad.stderr
    assert cli("verify", tmp_path / "absent").code == 2
