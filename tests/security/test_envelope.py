"""Envelope encryption: round trips, and every way of tampering is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from bastion.errors import IntegrityError, ShreddedError, UnknownKeyError
from bastion.security.envelope import (
    ArtifactKind,
    decrypt_file,
    encrypt_file,
    read_header,
    rewrap_file,
    shred_file,
)
from bastion.security.keys import KeyPurpose, Keyring
from tests.conftest import Cli, other_keyring

SEGMENT = 1 << 20


def _plain(tmp_path: Path, size: int, name: str = "plain.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, 3 * SEGMENT + 5])
def test_round_trip(keyring: Keyring, tmp_path: Path, size: int) -> None:
    source = _plain(tmp_path, size)
    encrypted = tmp_path / "a.enc"
    header = encrypt_file(source, encrypted, keyring=keyring, kind=ArtifactKind.DATASET)
    assert header.kek_key_id == keyring.primary_id(KeyPurpose.KEK)
    assert read_header(encrypted) == header
    decrypted = tmp_path / "a.dec"
    decrypt_file(encrypted, decrypted, keyring=keyring, expected_kind=ArtifactKind.DATASET)
    assert decrypted.read_bytes() == source.read_bytes()
    if size >= 64:
        assert source.read_bytes()[:64] not in encrypted.read_bytes()


def _refused(keyring: Keyring, data: bytes, tmp_path: Path) -> IntegrityError:
    bad = tmp_path / "bad.enc"
    bad.write_bytes(data)
    out = tmp_path / "bad.out"
    with pytest.raises(IntegrityError) as info:
        decrypt_file(bad, out, keyring=keyring)
    assert str(bad) in str(info.value)
    assert not out.exists(), "a refused decryption must not leave output behind"
    assert not list(tmp_path.glob(".bad.out.*")), "no temporary file may remain"
    return info.value


@pytest.fixture
def artifact(keyring: Keyring, tmp_path: Path) -> tuple[Path, bytes, int]:
    source = _plain(tmp_path, 2 * SEGMENT + 777)
    encrypted = tmp_path / "artifact.enc"
    header = encrypt_file(source, encrypted, keyring=keyring)
    return encrypted, encrypted.read_bytes(), header.payload_offset


def test_every_flipped_header_byte_is_refused(
    keyring: Keyring, tmp_path: Path, artifact: tuple[Path, bytes, int]
) -> None:
    _, data, payload_offset = artifact
    for index in range(payload_offset):
        for bit in (0x01, 0x80):
            flipped = bytearray(data)
            flipped[index] ^= bit
            _refused(keyring, bytes(flipped), tmp_path)


def test_flipped_payload_bytes_are_refused(
    keyring: Keyring, tmp_path: Path, artifact: tuple[Path, bytes, int]
) -> None:
    _, data, offset = artifact
    positions = [
        offset,
        offset + 1,
        offset + 40,
        offset + SEGMENT - 1,
        offset + SEGMENT,
        offset + SEGMENT + 16,
        len(data) // 2,
        len(data) - 17,
        len(data) - 1,
    ]
    for position in positions:
        flipped = bytearray(data)
        flipped[position] ^= 0x04
        error = _refused(keyring, bytes(flipped), tmp_path)
        assert "payload authentication failed" in str(error)


@pytest.mark.parametrize("cut", [1, 16, SEGMENT, SEGMENT + 777])
def test_truncation_is_refused(
    keyring: Keyring, tmp_path: Path, artifact: tuple[Path, bytes, int], cut: int
) -> None:
    _, data, _ = artifact
    _refused(keyring, data[:-cut], tmp_path)


def test_truncation_into_header_is_refused(
    keyring: Keyring, tmp_path: Path, artifact: tuple[Path, bytes, int]
) -> None:
    _, data, offset = artifact
    for length in (0, 5, 20, offset - 1, offset):
        _refused(keyring, data[:length], tmp_path)


@pytest.mark.parametrize(
    "extra",
    [b"\x00", bytes(range(40)), bytes(SEGMENT + 3)],
    ids=["one-byte", "40-bytes", "segment"],
)
def test_appended_bytes_are_refused(
    keyring: Keyring, tmp_path: Path, artifact: tuple[Path, bytes, int], extra: bytes
) -> None:
    _, data, _ = artifact
    _refused(keyring, data + extra, tmp_path)


def test_header_moved_onto_another_payload_is_refused(keyring: Keyring, tmp_path: Path) -> None:
    first, second = _plain(tmp_path, 5000, "one"), _plain(tmp_path, 5000, "two")
    h1 = encrypt_file(first, tmp_path / "one.enc", keyring=keyring)
    h2 = encrypt_file(second, tmp_path / "two.enc", keyring=keyring)
    one, two = (tmp_path / "one.enc").read_bytes(), (tmp_path / "two.enc").read_bytes()
    swapped = one[: h1.payload_offset] + two[h2.payload_offset :]
    error = _refused(keyring, swapped, tmp_path)
    assert "payload authentication failed" in str(error)
    # Moving only the wrapped data key onto the other artifact's id fails too.
    forged = replace(h2, kek_key_id=h1.kek_key_id, wrapped_key=h1.wrapped_key).encode()
    error = _refused(keyring, forged + two[h2.payload_offset :], tmp_path)
    assert "header authentication failed" in str(error)


def test_artifact_from_another_cluster_names_unknown_key(keyring: Keyring, tmp_path: Path) -> None:
    foreign = other_keyring(tmp_path / "other-home")
    source = _plain(tmp_path, 100)
    header = encrypt_file(source, tmp_path / "f.enc", keyring=foreign)
    with pytest.raises(UnknownKeyError, match=f"key id {header.kek_key_id}"):
        decrypt_file(tmp_path / "f.enc", tmp_path / "f.out", keyring=keyring)
    assert not (tmp_path / "f.out").exists()


def test_kind_is_bound(keyring: Keyring, tmp_path: Path) -> None:
    source = _plain(tmp_path, 100)
    encrypt_file(source, tmp_path / "c.enc", keyring=keyring, kind=ArtifactKind.CHECKPOINT)
    with pytest.raises(IntegrityError, match="holds a checkpoint, expected a model"):
        decrypt_file(
            tmp_path / "c.enc",
            tmp_path / "c.out",
            keyring=keyring,
            expected_kind=ArtifactKind.MODEL,
        )


def test_not_an_artifact(keyring: Keyring, tmp_path: Path) -> None:
    error = _refused(keyring, b"hello world, not encrypted at all", tmp_path)
    assert "not a Bastion encrypted artifact" in str(error)


def test_fixed_artifact_id_is_recorded(keyring: Keyring, tmp_path: Path) -> None:
    artifact_id = uuid.uuid4()
    encrypt_file(_plain(tmp_path, 10), tmp_path / "x.enc", keyring=keyring, artifact_id=artifact_id)
    assert read_header(tmp_path / "x.enc").artifact_id == artifact_id


def test_rotate_then_rewrap_keeps_payload_and_decrypts(keyring: Keyring, tmp_path: Path) -> None:
    source = _plain(tmp_path, 3 * SEGMENT)
    encrypted = tmp_path / "r.enc"
    old = encrypt_file(source, encrypted, keyring=keyring)
    old_bytes = encrypted.read_bytes()
    keyring.rotate([KeyPurpose.KEK])
    # Old keys still decrypt before re-wrapping.
    decrypt_file(encrypted, tmp_path / "before.out", keyring=keyring)
    new, changed = rewrap_file(encrypted, keyring=keyring)
    assert changed
    assert new.kek_key_id == keyring.primary_id(KeyPurpose.KEK) != old.kek_key_id
    assert new.artifact_id == old.artifact_id
    assert encrypted.read_bytes()[new.payload_offset :] == old_bytes[old.payload_offset :]
    decrypt_file(encrypted, tmp_path / "after.out", keyring=keyring)
    assert (tmp_path / "after.out").read_bytes() == source.read_bytes()
    assert rewrap_file(encrypted, keyring=keyring) == (new, False)


def test_shred_destroys_the_data_key(keyring: Keyring, tmp_path: Path) -> None:
    source = _plain(tmp_path, 4096)
    encrypted = tmp_path / "s.enc"
    header = encrypt_file(source, encrypted, keyring=keyring)
    before = encrypted.read_bytes()
    shredded = shred_file(encrypted)
    after = encrypted.read_bytes()
    assert shredded.shredded and len(after) == len(before)
    assert header.wrapped_key not in after
    assert after[header.payload_offset :] == before[header.payload_offset :]
    with pytest.raises(ShreddedError, match="shredded"):
        decrypt_file(encrypted, tmp_path / "s.out", keyring=keyring)
    # Clearing the flag does not bring the key back.
    revived = bytearray(after)
    revived[9] = 0
    _refused(keyring, bytes(revived), tmp_path)
    assert shred_file(encrypted).shredded  # idempotent


def test_cli_encrypt_decrypt_and_refusals(cli: Cli, tmp_path: Path) -> None:
    source = _plain(tmp_path, 70_000)
    encrypted, decrypted = tmp_path / "cli.enc", tmp_path / "cli.out"
    result = cli("encrypt", source, encrypted, "--kind", "model")
    assert result.code == 0, result.stderr
    assert "encrypted" in result.stdout
    assert cli("decrypt", encrypted, decrypted).code == 0
    assert decrypted.read_bytes() == source.read_bytes()
    data = bytearray(encrypted.read_bytes())
    data[-5] ^= 1
    tampered = tmp_path / "tampered.enc"
    tampered.write_bytes(bytes(data))
    result = cli("decrypt", tampered, tmp_path / "t.out")
    assert result.code == 1
    assert result.stderr.startswith("error: ") and str(tampered) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "t.out").exists()
    missing = cli("decrypt", tmp_path / "nope.enc", tmp_path / "n.out")
    assert missing.code == 2 and "no such file" in missing.stderr
    assert cli("encrypt", source, tmp_path / "x", "--kind", "weird").code == 2
    debug = cli("--debug", "decrypt", tampered, tmp_path / "t.out")
    assert debug.code == 1 and "Traceback" in debug.stderr


def test_cli_rotate_rewrap_shred(cli: Cli, tmp_path: Path) -> None:
    source = _plain(tmp_path, 1000)
    encrypted = tmp_path / "k.enc"
    assert cli("encrypt", source, encrypted).code == 0
    assert cli("keys", "rotate").code == 0
    result = cli("keys", "rewrap", encrypted)
    assert result.code == 0 and "re-wrapped" in result.stdout
    assert cli("decrypt", encrypted, tmp_path / "k.out").code == 0
    refused = cli("shred", encrypted)
    assert refused.code == 2 and "--yes" in refused.stderr
    assert cli("shred", encrypted, "--yes").code == 0
    gone = cli("decrypt", encrypted, tmp_path / "k2.out")
    assert gone.code == 1 and "shredded" in gone.stderr


_MEMORY_PROBE = """
import resource, sys
from pathlib import Path
from bastion.config import Settings
from bastion.security.keys import load_keyring
from bastion.security.envelope import encrypt_file, decrypt_file
src, enc, dec = (Path(p) for p in sys.argv[1:4])
ring = load_keyring(Settings())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
encrypt_file(src, enc, keyring=ring)
decrypt_file(enc, dec, keyring=ring)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) // 1024)
"""


@pytest.mark.slow
def test_streaming_memory_is_bounded(home: Path, tmp_path: Path) -> None:
    """4 GiB with BASTION_SLOW_SCALE=16; CI runs 256 MiB."""
    scale = int(os.environ.get("BASTION_SLOW_SCALE", "1"))
    size = scale * 256 * SEGMENT
    if shutil.disk_usage(tmp_path).free < 3 * size:
        pytest.fail(f"need {3 * size} bytes free in {tmp_path} for the streaming test")
    source = tmp_path / "big.bin"
    with source.open("wb") as handle:
        chunk = os.urandom(SEGMENT)
        for _ in range(size // SEGMENT):
            handle.write(chunk)
    enc, dec = tmp_path / "big.enc", tmp_path / "big.dec"
    probe = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(source), str(enc), str(dec)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BASTION_HOME": str(home)},
    )
    grown_mib = int(probe.stdout.strip())
    assert grown_mib < 200, f"peak memory grew by {grown_mib} MiB for a {size >> 20} MiB file"
    assert dec.stat().st_size == size
    with source.open("rb") as a, dec.open("rb") as b:
        while block := a.read(16 * SEGMENT):
            assert block == b.read(16 * SEGMENT)


def test_progress_reports_every_plaintext_byte(keyring: Keyring, tmp_path: Path) -> None:
    source = _plain(tmp_path, 2 * SEGMENT + 9)
    seen: list[int] = []
    encrypt_file(source, tmp_path / "p.enc", keyring=keyring, on_progress=seen.append)
    assert sum(seen) == source.stat().st_size and len(seen) == 3
    seen.clear()
    decrypt_file(tmp_path / "p.enc", tmp_path / "p.out", keyring=keyring, on_progress=seen.append)
    assert sum(seen) == source.stat().st_size


def test_refused_decryption_is_audited(cli: Cli, tmp_path: Path) -> None:
    from bastion.config import Settings
    from bastion.security.audit_log import open_local_audit_log
    from bastion.security.keys import load_keyring

    bogus = tmp_path / "bogus.enc"
    bogus.write_bytes(b"definitely not an artifact")
    assert cli("decrypt", bogus, tmp_path / "out").code == 1
    rows = list(open_local_audit_log(Settings(), load_keyring(Settings())).rows())
    assert [r.action for r in rows] == ["artifact.decrypt.refused"]
    assert rows[0].target == str(bogus) and "not a Bastion encrypted artifact" in rows[0].details
