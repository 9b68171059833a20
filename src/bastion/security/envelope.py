"""Envelope encryption of artifacts at rest: one data key per artifact, wrapped by the keyring.

An artifact file is a header followed by a Tink streaming-AEAD payload
(AES256_GCM_HKDF_1MB, 1 MiB segments, so memory stays bounded whatever the size).
All integers are big-endian::

    offset    size  field
    0         8     magic  b"BASTION\\x1a"
    8         1     format version (1)
    9         1     flags: bit 0 = shredded; other bits must be 0
    10        16    artifact id (UUID, 16 raw bytes)
    26        1     n = length of kind (1..64)
    27        n     kind, ASCII (dataset, checkpoint, model, file, ...)
    27+n      4     key-encryption key id (the kek keyset's key that wrapped the data key)
    31+n      2     m = length of the wrapped data key (1..4096)
    33+n      m     wrapped data key: Tink EncryptedKeyset (binary protobuf)
    33+n+m    ...   payload: Tink streaming-AEAD ciphertext

``identity`` is bytes 0..8 followed by bytes 10..27+n (magic, version, artifact id,
kind length, kind: every header byte that never changes). The payload's associated
data is ``identity``; the wrapped data key's associated data is ``identity`` followed
by the 4-byte key id. So a header cannot be moved onto another payload, a data key
cannot be moved to another artifact, and every header byte is authenticated. Re-wrap
replaces the key id and wrapped key only, leaving the payload bytes as they are.
Shred sets flag bit 0 and overwrites the wrapped key with zeros in place.
"""

from __future__ import annotations

import enum
import io
import os
import shutil
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import tink
from tink import streaming_aead

from bastion.errors import (
    IntegrityError,
    InvalidInput,
    ShreddedError,
    UnknownKeyError,
)
from bastion.files import atomic_output
from bastion.security.keys import KeyPurpose, Keyring

__all__ = [
    "ArtifactHeader",
    "ArtifactKind",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_file",
    "encrypt_stream",
    "read_header",
    "rewrap_file",
    "shred_file",
]

MAGIC = b"BASTION\x1a"
FORMAT_VERSION = 1
FLAG_SHREDDED = 0x01
MAX_KIND_LEN = 64
MAX_WRAPPED_LEN = 4096
CHUNK = 1 << 20
_FIXED = struct.Struct(">8sBB16sB")  # magic, version, flags, artifact id, kind length
_KEY_REF = struct.Struct(">IH")  # key id, wrapped key length
#: Called with the number of plaintext bytes just processed.
Progress = Callable[[int], None]
_STREAM_TEMPLATE = streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB


class ArtifactKind(enum.StrEnum):
    """What an encrypted artifact holds; bound into its ciphertext."""

    DATASET = "dataset"
    CHECKPOINT = "checkpoint"
    MODEL = "model"
    FILE = "file"
    EXPORT = "export"
    CODE = "code"


@dataclass(frozen=True)
class ArtifactHeader:
    """The parsed header of an encrypted artifact."""

    artifact_id: uuid.UUID
    kind: ArtifactKind
    kek_key_id: int
    wrapped_key: bytes
    shredded: bool
    payload_offset: int

    @property
    def identity(self) -> bytes:
        kind = self.kind.value.encode("ascii")
        return MAGIC + bytes([FORMAT_VERSION]) + self.artifact_id.bytes + bytes([len(kind)]) + kind

    @property
    def wrap_associated_data(self) -> bytes:
        return self.identity + struct.pack(">I", self.kek_key_id)

    def encode(self) -> bytes:
        flags = FLAG_SHREDDED if self.shredded else 0
        kind = self.kind.value.encode("ascii")
        return (
            _FIXED.pack(MAGIC, FORMAT_VERSION, flags, self.artifact_id.bytes, len(kind))
            + kind
            + _KEY_REF.pack(self.kek_key_id, len(self.wrapped_key))
            + self.wrapped_key
        )


class _Unclosable(io.RawIOBase):
    """Lets Tink close its stream without closing (and so un-fsyncing) our file."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        return self._inner.write(data)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._inner.readinto(buffer)  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self._inner.flush()
        super().close()


def _read_exact(handle: BinaryIO, size: int, *, path: str) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise IntegrityError(f"{path}: truncated artifact header; the file is damaged")
    return data


def _parse_header(handle: BinaryIO, *, path: str) -> ArtifactHeader:
    # (1) Fixed part: magic, version, flags, id, kind length.
    fixed = handle.read(_FIXED.size)
    if not fixed or fixed[: len(MAGIC)] != MAGIC[: len(fixed)]:
        raise IntegrityError(f"{path}: not a Bastion encrypted artifact (bad magic bytes)")
    if len(fixed) < _FIXED.size:
        raise IntegrityError(f"{path}: truncated artifact header; the file is damaged")
    _, version, flags, raw_id, kind_len = _FIXED.unpack(fixed)
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"{path}: artifact format version {version} is not supported by this Bastion "
            f"(expects {FORMAT_VERSION}); the header is damaged or from a newer release"
        )
    if flags & ~FLAG_SHREDDED:
        raise IntegrityError(f"{path}: unknown header flags 0x{flags:02x}; the header is damaged")
    # (2) Kind.
    if not 1 <= kind_len <= MAX_KIND_LEN:
        raise IntegrityError(f"{path}: invalid kind length {kind_len}; the header is damaged")
    raw_kind = _read_exact(handle, kind_len, path=path)
    try:
        kind = ArtifactKind(raw_kind.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError(f"{path}: unknown artifact kind; the header is damaged") from None
    # (3) Key reference and wrapped data key.
    kek_key_id, wrapped_len = _KEY_REF.unpack(_read_exact(handle, _KEY_REF.size, path=path))
    if not 1 <= wrapped_len <= MAX_WRAPPED_LEN:
        raise IntegrityError(f"{path}: invalid wrapped key length; the header is damaged")
    wrapped = _read_exact(handle, wrapped_len, path=path)
    return ArtifactHeader(
        artifact_id=uuid.UUID(bytes=raw_id),
        kind=kind,
        kek_key_id=kek_key_id,
        wrapped_key=wrapped,
        shredded=bool(flags & FLAG_SHREDDED),
        payload_offset=_FIXED.size + kind_len + _KEY_REF.size + wrapped_len,
    )


def read_header(path: Path) -> ArtifactHeader:
    """Parse an artifact's header without any key."""
    with _open_input(path) as handle:
        return _parse_header(handle, path=str(path))


def _open_input(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path}: is a directory, expected a file") from None


def _unwrap(header: ArtifactHeader, keyring: Keyring, *, path: str) -> tink.KeysetHandle:
    # (1) A shredded artifact has no data key any more.
    if header.shredded:
        raise ShreddedError(
            f"{path}: artifact {header.artifact_id} was shredded; its data key is destroyed "
            "and it can never be decrypted"
        )
    # (2) The key that wrapped the data key must be one of ours.
    if header.kek_key_id not in keyring.key_ids(KeyPurpose.KEK):
        raise UnknownKeyError(
            f"{path}: encrypted under key id {header.kek_key_id}, which this keyring does not "
            "hold; decrypt it on the cluster that wrote it, or restore that cluster's keys"
        )
    # (3) Unwrap, authenticating the whole header through the associated data.
    try:
        return tink.proto_keyset_format.parse_encrypted(
            header.wrapped_key, keyring.kek(), header.wrap_associated_data
        )
    except tink.TinkError:
        raise IntegrityError(
            f"{path}: header authentication failed; the header was altered or moved from "
            "another artifact"
        ) from None


def _wrap(
    data_keyset: tink.KeysetHandle,
    *,
    keyring: Keyring,
    artifact_id: uuid.UUID,
    kind: ArtifactKind,
) -> ArtifactHeader:
    """A header carrying ``data_keyset`` wrapped under the keyring's primary kek."""
    draft = ArtifactHeader(
        artifact_id=artifact_id,
        kind=kind,
        kek_key_id=keyring.primary_id(KeyPurpose.KEK),
        wrapped_key=b"",
        shredded=False,
        payload_offset=0,
    )
    wrapped = tink.proto_keyset_format.serialize_encrypted(
        data_keyset, keyring.kek(), draft.wrap_associated_data
    )
    return replace(draft, wrapped_key=wrapped, payload_offset=len(draft.encode()) + len(wrapped))


def encrypt_stream(
    source: BinaryIO,
    destination: BinaryIO,
    *,
    keyring: Keyring,
    kind: ArtifactKind,
    artifact_id: uuid.UUID | None = None,
    on_progress: Progress | None = None,
) -> ArtifactHeader:
    """Encrypt everything ``source`` yields into ``destination`` (header, then payload)."""
    data_keyset = tink.new_keyset_handle(_STREAM_TEMPLATE)
    header = _wrap(data_keyset, keyring=keyring, artifact_id=artifact_id or uuid.uuid4(), kind=kind)
    destination.write(header.encode())
    cipher = data_keyset.primitive(streaming_aead.StreamingAead)
    with cipher.new_encrypting_stream(_Unclosable(destination), header.identity) as stream:
        while chunk := source.read(CHUNK):
            stream.write(chunk)
            if on_progress is not None:
                on_progress(len(chunk))
    return header


def decrypt_stream(
    source: BinaryIO,
    destination: BinaryIO,
    *,
    keyring: Keyring,
    path: str = "<stream>",
    expected_kind: ArtifactKind | None = None,
    on_progress: Progress | None = None,
) -> ArtifactHeader:
    """Decrypt an artifact from ``source`` into ``destination``.

    Segments are authenticated as they stream; truncation or extra bytes are only
    known at the end, so callers must discard ``destination`` when this raises.
    """
    header = _parse_header(source, path=path)
    if expected_kind is not None and header.kind is not expected_kind:
        raise IntegrityError(
            f"{path}: artifact holds a {header.kind.value}, expected a {expected_kind.value}"
        )
    cipher = _unwrap(header, keyring, path=path).primitive(streaming_aead.StreamingAead)
    try:
        with cipher.new_decrypting_stream(_Unclosable(source), header.identity) as stream:
            while chunk := stream.read(CHUNK):
                destination.write(chunk)
                if on_progress is not None:
                    on_progress(len(chunk))
    except tink.TinkError:
        raise IntegrityError(
            f"{path}: payload authentication failed; the file was altered, truncated or "
            "extended, or its header belongs to another payload"
        ) from None
    return header


def encrypt_file(
    source: Path,
    destination: Path,
    *,
    keyring: Keyring,
    kind: ArtifactKind = ArtifactKind.FILE,
    artifact_id: uuid.UUID | None = None,
    on_progress: Progress | None = None,
) -> ArtifactHeader:
    """Encrypt ``source`` into a new artifact at ``destination`` (written atomically)."""
    with _open_input(source) as src, atomic_output(destination) as dst:
        return encrypt_stream(
            src,
            dst,
            keyring=keyring,
            kind=kind,
            artifact_id=artifact_id,
            on_progress=on_progress,
        )


def decrypt_file(
    source: Path,
    destination: Path,
    *,
    keyring: Keyring,
    expected_kind: ArtifactKind | None = None,
    on_progress: Progress | None = None,
) -> ArtifactHeader:
    """Decrypt ``source`` into ``destination``; nothing is written unless all of it verifies."""
    with _open_input(source) as src, atomic_output(destination) as dst:
        return decrypt_stream(
            src,
            dst,
            keyring=keyring,
            path=str(source),
            expected_kind=expected_kind,
            on_progress=on_progress,
        )


def rewrap_file(path: Path, *, keyring: Keyring) -> tuple[ArtifactHeader, bool]:
    """Re-wrap the artifact's data key under the keyring's primary key.

    The payload bytes are copied unchanged. Returns the new header and whether
    anything changed (False when the primary already wraps it).
    """
    with _open_input(path) as src:
        header = _parse_header(src, path=str(path))
        primary = keyring.primary_id(KeyPurpose.KEK)
        data_keyset = _unwrap(header, keyring, path=str(path))  # authenticates the header
        if header.kek_key_id == primary:
            return header, False
        new_header = _wrap(
            data_keyset, keyring=keyring, artifact_id=header.artifact_id, kind=header.kind
        )
        src.seek(header.payload_offset)
        with atomic_output(path) as dst:
            dst.write(new_header.encode())
            shutil.copyfileobj(src, dst, CHUNK)
    return new_header, True


def shred_file(path: Path) -> ArtifactHeader:
    """Destroy the artifact's wrapped data key in place so it can never be decrypted.

    No key is needed. The overwrite goes to the same file blocks and is fsynced;
    copy-on-write file systems, snapshots and SSD wear levelling may still keep the
    old blocks (docs/security.md, "Crypto-shredding").
    """
    with path.open("r+b") as handle:
        header = _parse_header(handle, path=str(path))
        if header.shredded:
            return header
        wrapped_at = header.payload_offset - len(header.wrapped_key)
        handle.seek(9)
        handle.write(bytes([FLAG_SHREDDED]))
        handle.seek(wrapped_at)
        handle.write(bytes(len(header.wrapped_key)))
        handle.flush()
        os.fsync(handle.fileno())
    return ArtifactHeader(
        artifact_id=header.artifact_id,
        kind=header.kind,
        kek_key_id=header.kek_key_id,
        wrapped_key=bytes(len(header.wrapped_key)),
        shredded=True,
        payload_offset=header.payload_offset,
    )
