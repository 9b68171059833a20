"""Model transfer between clusters: encrypted to the recipient's HPKE key, signed by the sender.

A transfer file (``.bxfer``) moves a model from one compute plane to another without the
control plane or the carrier ever being able to read it::

    MAGIC "BASTION-XFER" 0x01
    u32 header length, header        canonical JSON: format, sender and recipient clusters,
                                     model name/version, evidence, each file's SHA-256 and
                                     size, and the data key wrapped with HPKE to the recipient
    u32 signature length, signature  ECDSA P-256 (the sender cluster's signing key) over header
    per file, in header order:       u32 name length, name, u64 length, AES-256-GCM ciphertext
                                     (associated data: SHA-256 of the header + the file name)

The data key is a fresh Tink AES-256-GCM keyset, sealed with Tink's HPKE (X25519,
HKDF-SHA256, AES-256-GCM) to the recipient's public keyset with the context
``bastion/transfer/v1/<recipient>``, so a file addressed to one cluster opens nowhere else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import tink
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tink import aead, hybrid, secret_key_access

from bastion.errors import IntegrityError, InvalidInput, SignatureError
from bastion.files import atomic_output, atomic_write_bytes, ensure_private_dir
from bastion.security.audit_chain import canonical_json
from bastion.security.keys import Keyring

__all__ = ["open_for_cluster", "read_transfer", "seal_for_cluster", "write_transfer"]

MAGIC = b"BASTION-XFER\x01"
FORMAT = "bastion-transfer/1"
MAX_HEADER = 1 << 20
_U32, _U64 = struct.Struct(">I"), struct.Struct(">Q")


def _context(recipient: str) -> bytes:
    return b"bastion/transfer/v1/" + recipient.encode()


def write_transfer(
    files: dict[str, Path],
    *,
    out: Path,
    keyring: Keyring,
    sender: str,
    recipient: str,
    recipient_keyset: str,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Encrypt ``files`` to ``recipient`` and sign the result; return the header."""
    try:
        public = tink.proto_keyset_format.parse_without_secret(base64.b64decode(recipient_keyset))
        seal = public.primitive(hybrid.HybridEncrypt)
    except (tink.TinkError, ValueError) as exc:
        raise InvalidInput(f"cluster {recipient!r} has no usable HPKE public key ({exc})") from None
    data_key = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)
    wrapped = seal.encrypt(
        tink.proto_keyset_format.serialize(data_key, secret_key_access.TOKEN), _context(recipient)
    )
    contents = {name: path.read_bytes() for name, path in sorted(files.items())}
    header = {
        "format": FORMAT,
        "sender": sender,
        "recipient": recipient,
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for name, data in contents.items()
        },
        "wrapped_key": base64.b64encode(wrapped).decode(),
        **meta,
    }
    body = canonical_json(header)
    signature = keyring.signer().sign(body)
    cipher = data_key.primitive(aead.Aead)
    digest = hashlib.sha256(body).digest()
    with atomic_output(out) as handle:
        handle.write(MAGIC + _U32.pack(len(body)) + body + _U32.pack(len(signature)) + signature)
        for name, data in contents.items():
            sealed = cipher.encrypt(data, digest + name.encode())
            handle.write(_U32.pack(len(name)) + name.encode() + _U64.pack(len(sealed)) + sealed)
    return header


class _Reader:
    """Reads length-prefixed fields from a transfer file, refusing truncation."""

    def __init__(self, blob: bytes, path: Path) -> None:
        self.blob, self.path, self.offset = blob, path, 0

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.blob):
            raise IntegrityError(f"{self.path}: transfer file is truncated")
        chunk = self.blob[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def field(self, prefix: struct.Struct, limit: int | None = None) -> bytes:
        (size,) = prefix.unpack(self.take(prefix.size))
        if limit is not None and size > limit:
            raise IntegrityError(f"{self.path}: field too large")
        return self.take(size)


def _header(reader: _Reader, recipient: str) -> tuple[dict[str, Any], bytes]:
    if reader.take(len(MAGIC)) != MAGIC:
        raise IntegrityError(f"{reader.path}: not a Bastion transfer file")
    body = reader.field(_U32, MAX_HEADER)
    try:
        header: dict[str, Any] = json.loads(body)
    except ValueError:
        raise IntegrityError(f"{reader.path}: header is not JSON") from None
    if header.get("format") != FORMAT:
        raise IntegrityError(f"{reader.path}: unknown transfer format {header.get('format')!r}")
    if header.get("recipient") != recipient:
        raise IntegrityError(
            f"{reader.path}: addressed to cluster {header.get('recipient')!r}, not {recipient!r}"
        )
    return header, body


def _check_signature(
    reader: _Reader, header: dict[str, Any], body: bytes, trusted: dict[str, str]
) -> None:
    signature = reader.field(_U32, 4096)
    sender = str(header.get("sender"))
    pem = trusted.get(sender)
    if pem is None:
        raise SignatureError(
            f"{reader.path}: sent by {sender!r}, whose signing key is not known here"
        )
    public = serialization.load_pem_public_key(pem.encode())
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SignatureError(f"cluster {sender!r} has no ECDSA signing key")
    try:
        public.verify(signature, body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError(
            f"{reader.path}: header signature does not verify with {sender!r}'s key"
        ) from None


def _data_key(reader: _Reader, header: dict[str, Any], keyring: Keyring, recipient: str) -> Any:
    try:
        keyset = keyring.hybrid_decrypt().decrypt(
            base64.b64decode(header["wrapped_key"]), _context(recipient)
        )
        handle = tink.proto_keyset_format.parse(keyset, secret_key_access.TOKEN)
        return handle.primitive(aead.Aead)
    except (tink.TinkError, KeyError, ValueError):
        raise IntegrityError(
            f"{reader.path}: the data key does not open with this cluster's key"
        ) from None


def _files(reader: _Reader, header: dict[str, Any], body: bytes, cipher: Any) -> dict[str, bytes]:
    digest, opened = hashlib.sha256(body).digest(), {}
    for name, entry in header["files"].items():
        if "/" in name or name.startswith("."):
            raise IntegrityError(f"{reader.path}: file name {name!r} is not allowed")
        found = reader.field(_U32, 1024)
        if found != name.encode():
            raise IntegrityError(f"{reader.path}: expected file {name!r}, found {found!r}")
        sealed = reader.field(_U64)
        try:
            data = cipher.decrypt(sealed, digest + name.encode())
        except tink.TinkError:
            raise IntegrityError(f"{reader.path}: {name} fails authentication") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"] or len(data) != entry["bytes"]:
            raise IntegrityError(f"{reader.path}: {name} differs from the signed header")
        opened[name] = data
    if reader.offset != len(reader.blob):
        raise IntegrityError(f"{reader.path}: unexpected data after the last file")
    return opened


def read_transfer(
    path: Path,
    *,
    keyring: Keyring,
    recipient: str,
    trusted_senders: dict[str, str],
    into: Path,
) -> dict[str, Any]:
    """Verify and open a transfer file addressed to ``recipient``; files land in ``into``.

    (1) The file is a Bastion transfer addressed to this cluster.
    (2) Its header is signed by the sender cluster's key as the control plane knows it.
    (3) The data key opens with this cluster's HPKE private key.
    (4) Every file decrypts (authenticated, bound to the header) to its listed hash; the
        file holds exactly the listed files and nothing after them.
    Nothing is written to ``into`` unless every check passes.
    """
    reader = _Reader(path.read_bytes(), path)
    header, body = _header(reader, recipient)  # (1)
    _check_signature(reader, header, body, trusted_senders)  # (2)
    cipher = _data_key(reader, header, keyring, recipient)  # (3)
    opened = _files(reader, header, body, cipher)  # (4)
    ensure_private_dir(into)
    for name, data in opened.items():
        atomic_write_bytes(into / name, data)
    return header


def _sealed_context(purpose: str, recipient: str) -> bytes:
    return f"bastion/{purpose}/v1/".encode() + recipient.encode()


def seal_for_cluster(value: bytes, *, purpose: str, recipient: str, recipient_keyset: str) -> str:
    """``value`` encrypted to a cluster's HPKE public key (base64): only its agent opens it.

    The control plane uses it for values it must pass on but never keep readable, such as
    the subject id of an erasure request.
    """
    try:
        public = tink.proto_keyset_format.parse_without_secret(base64.b64decode(recipient_keyset))
        sealed: bytes = public.primitive(hybrid.HybridEncrypt).encrypt(
            value, _sealed_context(purpose, recipient)
        )
    except (tink.TinkError, ValueError) as exc:
        raise InvalidInput(f"cluster {recipient!r} has no usable HPKE public key ({exc})") from None
    return base64.b64encode(sealed).decode()


def open_for_cluster(sealed: str, *, purpose: str, recipient: str, keyring: Keyring) -> bytes:
    """Open a value sealed to this cluster (IntegrityError when it was not, or was changed)."""
    try:
        opened: bytes = keyring.hybrid_decrypt().decrypt(
            base64.b64decode(sealed), _sealed_context(purpose, recipient)
        )
    except (tink.TinkError, ValueError):
        raise IntegrityError(
            f"a sealed {purpose} value does not open with this cluster's key"
        ) from None
    return opened
