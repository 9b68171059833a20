"""Who signs the audit log's checkpoints, and how a reader checks them.

A checkpoint's statement (:class:`bastion.security.audit_chain.Checkpoint`) is signed with
the keyring's primary signing key (Tink ECDSA P-256, DER) and names that key by the SHA-256
of its PEM public key; :func:`checkpoint_verifier` checks one against trusted PEM keys.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.errors import InvalidInput
from bastion.security.audit_chain import Checkpoint
from bastion.security.keys import Keyring, public_key_fingerprint

__all__ = ["CheckpointSigner", "KeyringCheckpointSigner", "checkpoint_verifier"]


class CheckpointSigner(Protocol):
    """Signs checkpoint statements; ``fingerprint`` names the public key."""

    @property
    def fingerprint(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


class KeyringCheckpointSigner:
    """Signs with the keyring's primary signing key (Tink ECDSA P-256, DER)."""

    def __init__(self, keyring: Keyring) -> None:
        self._signer = keyring.signer()
        self._fingerprint = keyring.primary_signing_key().fingerprint

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def sign(self, data: bytes) -> bytes:
        return bytes(self._signer.sign(data))


def _public_keys(pems: Sequence[bytes]) -> dict[str, ec.EllipticCurvePublicKey]:
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for pem in pems:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise InvalidInput("public key is not a PEM-encoded EC public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise InvalidInput("public key is not an EC (P-256) key")
        keys[public_key_fingerprint(pem)] = key
    return keys


def checkpoint_verifier(pems: Sequence[bytes]) -> Any:
    """A function that checks a checkpoint against the given trusted PEM public keys."""
    keys = _public_keys(pems)

    def verify(checkpoint: Checkpoint) -> bool:
        key = keys.get(checkpoint.key_fingerprint)
        if key is None:
            return False
        try:
            key.verify(
                base64.b64decode(checkpoint.signature),
                checkpoint.statement(),
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature:
            return False
        return True

    return verify
