"""The keyring: master key handling, file modes, rotation."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.config import Settings
from bastion.errors import ConfigurationError, InsecureKeyFileError
from bastion.security.keys import ROTATED_BY_DEFAULT, KeyPurpose, Keyring, load_keyring
from tests.conftest import Cli


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_use_creates_private_master_key_and_keysets(keyring: Keyring, home: Path) -> None:
    assert _mode(home / "master.key") == 0o600
    assert _mode(home / "keys") == 0o700
    for purpose in KeyPurpose:
        path = home / "keys" / f"{purpose.value}.tink"
        assert _mode(path) == 0o600
        assert len(keyring.key_ids(purpose)) == 1
    raw = base64.b64decode((home / "master.key").read_text())
    assert len(raw) == 32
    # Keysets are sealed: the master key bytes and key material never appear in clear.
    for path in (home / "keys").glob("*.tink"):
        assert raw not in path.read_bytes()


def test_keyring_reopens_with_same_keys(keyring: Keyring, settings: Settings) -> None:
    again = load_keyring(settings)
    for purpose in KeyPurpose:
        assert again.key_ids(purpose) == keyring.key_ids(purpose)


def test_group_readable_master_key_is_refused(
    keyring: Keyring, home: Path, settings: Settings
) -> None:
    os.chmod(home / "master.key", 0o640)
    with pytest.raises(InsecureKeyFileError, match=r"master\.key.*mode 0640"):
        load_keyring(settings)


def test_world_readable_keyset_file_is_refused(
    keyring: Keyring, home: Path, settings: Settings
) -> None:
    os.chmod(home / "keys" / "kek.tink", 0o644)
    with pytest.raises(InsecureKeyFileError, match=r"kek\.tink"):
        load_keyring(settings)


def test_cli_refuses_insecure_key_file_with_exit_2(cli: Cli, home: Path, tmp_path: Path) -> None:
    source = tmp_path / "plain.txt"
    source.write_text("x")
    assert cli("encrypt", source, tmp_path / "a.enc").code == 0
    os.chmod(home / "master.key", 0o644)
    result = cli("encrypt", source, tmp_path / "b.enc")
    assert result.code == 2
    assert "master.key" in result.stderr and "chmod 600" in result.stderr
    assert not (tmp_path / "b.enc").exists()


def test_master_key_from_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("BASTION_MASTER_KEY", key)
    ring = load_keyring(Settings())
    assert not (home / "master.key").exists()
    assert load_keyring(Settings()).key_ids(KeyPurpose.KEK) == ring.key_ids(KeyPurpose.KEK)
    # A different master key cannot open the keysets.
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(ConfigurationError, match="cannot open keyset with this master key"):
        load_keyring(Settings())


@pytest.mark.parametrize("value", ["short", base64.b64encode(b"x" * 16).decode(), "!!!!"])
def test_malformed_master_key_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("BASTION_MASTER_KEY", value)
    with pytest.raises(ConfigurationError, match="32 random bytes"):
        load_keyring(Settings())


def test_master_key_is_never_echoed(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("BASTION_MASTER_KEY", secret)
    result = cli("keys", "show")
    assert result.code == 0
    assert secret not in result.stdout + result.stderr


def test_rotation_adds_primary_and_keeps_old_keys(keyring: Keyring, settings: Settings) -> None:
    before = {purpose: keyring.primary_id(purpose) for purpose in KeyPurpose}
    new_ids = keyring.rotate()
    reopened = load_keyring(settings)
    for purpose in ROTATED_BY_DEFAULT:
        assert reopened.primary_id(purpose) == new_ids[purpose] != before[purpose]
        assert set(reopened.key_ids(purpose)) == {before[purpose], new_ids[purpose]}
    # Pseudonyms must stay stable: that key only rotates when asked by name.
    assert KeyPurpose.PSEUDONYM not in new_ids
    assert reopened.primary_id(KeyPurpose.PSEUDONYM) == before[KeyPurpose.PSEUDONYM]


def test_rotate_one_purpose_only(keyring: Keyring) -> None:
    kek_before = keyring.primary_id(KeyPurpose.KEK)
    keyring.rotate([KeyPurpose.SIGNING])
    assert keyring.primary_id(KeyPurpose.KEK) == kek_before
    assert len(keyring.key_ids(KeyPurpose.SIGNING)) == 2


def test_signing_key_signatures_verify_with_exported_pem(keyring: Keyring) -> None:
    info = keyring.primary_signing_key()
    message = b"checkpoint"
    signature = keyring.signer().sign(message)
    public = serialization.load_pem_public_key(info.public_pem)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    public.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_hybrid_keys_round_trip(keyring: Keyring) -> None:
    ciphertext = keyring.hybrid_encrypt().encrypt(b"weights", b"transfer")
    assert keyring.hybrid_decrypt().decrypt(ciphertext, b"transfer") == b"weights"


def test_keys_show_lists_ids_not_material(cli: Cli, home: Path) -> None:
    result = cli("keys", "show")
    assert result.code == 0
    ring = load_keyring(Settings())
    for purpose in KeyPurpose:
        assert str(ring.primary_id(purpose)) in result.stdout
    assert ring.primary_signing_key().fingerprint in result.stdout
    raw = (home / "master.key").read_text().strip()
    assert raw not in result.stdout
