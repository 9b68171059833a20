"""Cross-cluster transfer files: open only at the recipient, only with the sender's signature."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.errors import IntegrityError, SignatureError
from bastion.security.keys import Keyring
from bastion.security.transfer import read_transfer, write_transfer
from tests.conftest import other_keyring


def _export(tmp_path: Path, sender: Keyring, recipient: Keyring) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"\x01\x02" * 5000)
    (model / "model.json").write_text('{"builtin": "mlp"}')
    out = tmp_path / "m.bxfer"
    write_transfer(
        {p.name: p for p in model.iterdir()},
        out=out,
        keyring=sender,
        sender="public-a",
        recipient="private-b",
        recipient_keyset=recipient.hybrid_public_keyset(),
        meta={"model": {"name": "m", "version": 1}},
    )
    return out


def _trusted(sender: Keyring) -> dict[str, str]:
    return {"public-a": sender.primary_signing_key().public_pem.decode()}


def test_the_recipient_opens_it(keyring: Keyring, tmp_path: Path) -> None:
    recipient = other_keyring(tmp_path / "b")
    bundle = _export(tmp_path, keyring, recipient)
    assert b"mlp" not in bundle.read_bytes()
    header = read_transfer(
        bundle,
        keyring=recipient,
        recipient="private-b",
        trusted_senders=_trusted(keyring),
        into=tmp_path / "in",
    )
    assert header["model"] == {"name": "m", "version": 1}
    assert (tmp_path / "in" / "weights.safetensors").read_bytes() == b"\x01\x02" * 5000


def test_refusals(keyring: Keyring, tmp_path: Path) -> None:
    recipient = other_keyring(tmp_path / "b")
    bystander = other_keyring(tmp_path / "c")
    bundle = _export(tmp_path, keyring, recipient)
    into = tmp_path / "in"
    # Another cluster's key, or another name, cannot open it.
    with pytest.raises(IntegrityError, match="addressed to cluster 'private-b'"):
        read_transfer(
            bundle,
            keyring=bystander,
            recipient="private-c",
            trusted_senders=_trusted(keyring),
            into=into,
        )
    with pytest.raises(IntegrityError, match="does not open"):
        read_transfer(
            bundle,
            keyring=bystander,
            recipient="private-b",
            trusted_senders=_trusted(keyring),
            into=into,
        )
    # A sender the control plane does not know, or a forged signature.
    with pytest.raises(SignatureError, match="not known"):
        read_transfer(
            bundle, keyring=recipient, recipient="private-b", trusted_senders={}, into=into
        )
    with pytest.raises(SignatureError, match="does not verify"):
        read_transfer(
            bundle,
            keyring=recipient,
            recipient="private-b",
            trusted_senders=_trusted(bystander),
            into=into,
        )
    # Any flipped byte in the payload, or truncation.
    blob = bytearray(bundle.read_bytes())
    blob[-20] ^= 1
    bundle.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match="fails authentication"):
        read_transfer(
            bundle,
            keyring=recipient,
            recipient="private-b",
            trusted_senders=_trusted(keyring),
            into=into,
        )
    bundle.write_bytes(bytes(blob[:-100]))
    with pytest.raises(IntegrityError, match="truncated"):
        read_transfer(
            bundle,
            keyring=recipient,
            recipient="private-b",
            trusted_senders=_trusted(keyring),
            into=into,
        )
    assert not into.exists()
