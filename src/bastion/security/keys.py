"""The compute plane's keyring: Google Tink keysets stored encrypted under a master key.

Four keysets live in ``BASTION_HOME/keys``:

* ``kek``     AES-256-GCM AEAD that wraps each artifact's own data key;
* ``hybrid``  HPKE (X25519, HKDF-SHA256, AES-256-GCM) pair for cross-cluster transfer;
* ``signing`` ECDSA P-256 / SHA-256 (DER) for model-signing and audit checkpoints;
* ``pseudonym`` HMAC-SHA256 PRF for keyed pseudonyms of identifiers.

Each file is a Tink ``EncryptedKeyset`` sealed by the master key with the
associated data ``bastion/keyring/v1/<purpose>``. The master key is 32 random
bytes, base64-encoded, taken from ``BASTION_MASTER_KEY`` or from
``BASTION_HOME/master.key`` (created on first use with mode 0600; refused if
group or others can read it). Rotation adds a new primary key to a keyset; the
old keys stay so that what they protected can still be opened or verified.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tink
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tink import aead, hybrid, prf, secret_key_access, signature, streaming_aead
from tink.proto import aes_gcm_pb2, ecdsa_pb2, tink_pb2

from bastion.config import Settings
from bastion.errors import ConfigurationError, InsecureKeyFileError
from bastion.files import atomic_write_bytes, ensure_private_dir, file_lock

__all__ = [
    "KeyPurpose",
    "Keyring",
    "load_keyring",
    "prf_from_capability",
    "public_key_fingerprint",
]

aead.register()
prf.register()
hybrid.register()
signature.register()
streaming_aead.register()
prf.register()

MASTER_KEY_BYTES = 32
_KEYSET_AD_PREFIX = b"bastion/keyring/v1/"
_AES_GCM_TYPE_URL = "type.googleapis.com/google.crypto.tink.AesGcmKey"


class KeyPurpose(enum.StrEnum):
    """What a keyset is for; also its file name in ``BASTION_HOME/keys``."""

    KEK = "kek"
    HYBRID = "hybrid"
    SIGNING = "signing"
    PSEUDONYM = "pseudonym"


#: Rotated by default. The pseudonym key is not: rotating it changes every pseudonym.
ROTATED_BY_DEFAULT = (KeyPurpose.KEK, KeyPurpose.HYBRID, KeyPurpose.SIGNING)


def _signing_template() -> tink_pb2.KeyTemplate:
    # ECDSA P-256, SHA-256, DER signatures, RAW output prefix: the signatures are plain
    # X9.62 ECDSA that OpenSSL, `cryptography` and model-signing verify with the PEM key.
    template = tink_pb2.KeyTemplate()
    template.CopyFrom(signature.signature_key_templates.ECDSA_P256)
    template.output_prefix_type = tink_pb2.RAW
    return template


_TEMPLATES: dict[KeyPurpose, Any] = {
    KeyPurpose.KEK: aead.aead_key_templates.AES256_GCM,
    KeyPurpose.HYBRID: hybrid.hybrid_key_templates.DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM,
    KeyPurpose.SIGNING: _signing_template(),
    KeyPurpose.PSEUDONYM: prf.prf_key_templates.HMAC_SHA256,
}


def public_key_fingerprint(pem: bytes) -> str:
    """SHA-256 of the PEM public key, hex: the key hint model-signing records."""
    return hashlib.sha256(pem).hexdigest()


def _check_private_file(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InsecureKeyFileError(path, mode)


def _decode_master_key(text: str, *, source: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != MASTER_KEY_BYTES:
        raise ConfigurationError(
            f"{source}: master key must be {MASTER_KEY_BYTES} random bytes in base64; "
            "generate one with: python -c 'import os,base64;"
            "print(base64.b64encode(os.urandom(32)).decode())'"
        )
    return raw


def _read_or_create_master_key(settings: Settings) -> bytes:
    if settings.master_key is not None:
        return _decode_master_key(
            settings.master_key.get_secret_value(), source="BASTION_MASTER_KEY"
        )
    path = settings.master_key_file
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _check_private_file(path)
        return _decode_master_key(path.read_text(encoding="ascii"), source=str(path))
    raw = os.urandom(MASTER_KEY_BYTES)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(raw).decode("ascii") + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return raw


def _master_aead(raw: bytes) -> aead.Aead:
    # Import the raw master key as a one-key Tink AES-256-GCM keyset.
    key = tink_pb2.Keyset.Key(
        key_data=tink_pb2.KeyData(
            type_url=_AES_GCM_TYPE_URL,
            value=aes_gcm_pb2.AesGcmKey(version=0, key_value=raw).SerializeToString(),
            key_material_type=tink_pb2.KeyData.SYMMETRIC,
        ),
        status=tink_pb2.ENABLED,
        key_id=1,
        output_prefix_type=tink_pb2.RAW,
    )
    keyset = tink_pb2.Keyset(primary_key_id=1, key=[key])
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(aead.Aead)


def _to_proto(handle: tink.KeysetHandle) -> tink_pb2.Keyset:
    return tink_pb2.Keyset.FromString(
        tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    )


def _from_proto(keyset: tink_pb2.Keyset) -> tink.KeysetHandle:
    return tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)


def _add_primary(handle: tink.KeysetHandle, template: Any) -> tuple[tink.KeysetHandle, int]:
    keyset = _to_proto(handle)
    used = {key.key_id for key in keyset.key}
    while True:
        fresh = _to_proto(tink.new_keyset_handle(template)).key[0]
        if fresh.key_id not in used:
            break
    keyset.key.append(fresh)
    keyset.primary_key_id = fresh.key_id
    return _from_proto(keyset), fresh.key_id


def _ec_public_key(public: ecdsa_pb2.EcdsaPublicKey) -> ec.EllipticCurvePublicKey:
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(public.x, "big"), int.from_bytes(public.y, "big"), ec.SECP256R1()
    )
    return numbers.public_key()


def _public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class SigningKeyInfo:
    """A signing key's id, PEM public key and fingerprint."""

    key_id: int
    public_pem: bytes
    fingerprint: str
    primary: bool


def prf_from_capability(capability: str) -> prf.Prf:
    """The pseudonym PRF from :meth:`Keyring.pseudonym_capability`."""
    try:
        handle = tink.json_proto_keyset_format.parse(capability, secret_key_access.TOKEN)
        return handle.primitive(prf.PrfSet).primary()
    except tink.TinkError as exc:
        raise ConfigurationError(
            f"the pseudonym key handed to this job is unusable: {exc}"
        ) from None


class Keyring:
    """The keysets of one compute plane, opened with its master key."""

    def __init__(self, *, keys_dir: Path, master: aead.Aead) -> None:
        self._keys_dir = keys_dir
        self._master = master
        self._handles: dict[KeyPurpose, tink.KeysetHandle] = {}

    # -- storage ---------------------------------------------------------------------------

    def _path(self, purpose: KeyPurpose) -> Path:
        return self._keys_dir / f"{purpose.value}.tink"

    def _ad(self, purpose: KeyPurpose) -> bytes:
        return _KEYSET_AD_PREFIX + purpose.value.encode("ascii")

    def _write(self, purpose: KeyPurpose, handle: tink.KeysetHandle) -> None:
        blob = tink.proto_keyset_format.serialize_encrypted(handle, self._master, self._ad(purpose))
        atomic_write_bytes(self._path(purpose), blob)
        self._handles[purpose] = handle

    def _load(self, purpose: KeyPurpose) -> None:
        path = self._path(purpose)
        if not path.exists():
            self._write(purpose, tink.new_keyset_handle(_TEMPLATES[purpose]))
            return
        _check_private_file(path)
        try:
            handle = tink.proto_keyset_format.parse_encrypted(
                path.read_bytes(), self._master, self._ad(purpose)
            )
        except tink.TinkError as exc:
            raise ConfigurationError(
                f"{path}: cannot open keyset with this master key; check BASTION_MASTER_KEY "
                "or master.key belongs to this BASTION_HOME"
            ) from exc
        self._handles[purpose] = handle

    def handle(self, purpose: KeyPurpose) -> tink.KeysetHandle:
        return self._handles[purpose]

    def key_ids(self, purpose: KeyPurpose) -> list[int]:
        return [key.key_id for key in self.handle(purpose).keyset_info().key_info]

    def primary_id(self, purpose: KeyPurpose) -> int:
        return int(self.handle(purpose).keyset_info().primary_key_id)

    def rotate(self, purposes: list[KeyPurpose] | None = None) -> dict[KeyPurpose, int]:
        """Add a new primary key to each keyset; return the new key ids."""
        new_ids: dict[KeyPurpose, int] = {}
        with _keys_lock(self._keys_dir):
            for purpose in purposes or ROTATED_BY_DEFAULT:
                self._load(purpose)  # re-read under the lock: another process may have rotated
                handle, key_id = _add_primary(self.handle(purpose), _TEMPLATES[purpose])
                self._write(purpose, handle)
                new_ids[purpose] = key_id
        return new_ids

    # -- primitives ------------------------------------------------------------------------

    def kek(self) -> aead.Aead:
        """AEAD over every key-encryption key; encrypts with the primary."""
        return self.handle(KeyPurpose.KEK).primitive(aead.Aead)

    def hybrid_decrypt(self) -> hybrid.HybridDecrypt:
        return self.handle(KeyPurpose.HYBRID).primitive(hybrid.HybridDecrypt)

    def hybrid_encrypt(self) -> hybrid.HybridEncrypt:
        return self.handle(KeyPurpose.HYBRID).public_keyset_handle().primitive(hybrid.HybridEncrypt)

    def hybrid_public_keyset(self) -> str:
        """The HPKE public keyset (Tink binary, base64): what others encrypt transfers to."""
        public = self.handle(KeyPurpose.HYBRID).public_keyset_handle()
        return base64.b64encode(tink.proto_keyset_format.serialize_without_secret(public)).decode()

    def pseudonym_prf(self) -> prf.Prf:
        """HMAC-SHA256 PRF of the primary pseudonym key (stable across datasets)."""
        return self.handle(KeyPurpose.PSEUDONYM).primitive(prf.PrfSet).primary()

    def pseudonym_capability(self) -> str:
        """The pseudonym keyset alone, serialised for one job that must compute pseudonyms.

        It opens nothing (no data key, no signing key): a pseudonymisation job gets this
        and nothing else from the keyring. See :func:`prf_from_capability`.
        """
        return str(
            tink.json_proto_keyset_format.serialize(
                self.handle(KeyPurpose.PSEUDONYM), secret_key_access.TOKEN
            )
        )

    def signer(self) -> signature.PublicKeySign:
        return self.handle(KeyPurpose.SIGNING).primitive(signature.PublicKeySign)

    def signing_keys(self) -> list[SigningKeyInfo]:
        """Every signing key's public half, the primary first."""
        keyset = _to_proto(self.handle(KeyPurpose.SIGNING))
        infos = []
        for key in keyset.key:
            private = ecdsa_pb2.EcdsaPrivateKey.FromString(key.key_data.value)
            pem = _public_pem(_ec_public_key(private.public_key))
            infos.append(
                SigningKeyInfo(
                    key_id=key.key_id,
                    public_pem=pem,
                    fingerprint=public_key_fingerprint(pem),
                    primary=key.key_id == keyset.primary_key_id,
                )
            )
        return sorted(infos, key=lambda info: not info.primary)

    def primary_signing_key(self) -> SigningKeyInfo:
        return self.signing_keys()[0]

    def encrypted_signing_pem(self, password: bytes) -> bytes:
        """The primary signing key as a password-encrypted PKCS#8 PEM.

        model-signing reads its key from a file; handing it an encrypted PEM with a
        one-time password keeps the clear private key off the disk.
        """
        keyset = _to_proto(self.handle(KeyPurpose.SIGNING))
        (key,) = [k for k in keyset.key if k.key_id == keyset.primary_key_id]
        private = ecdsa_pb2.EcdsaPrivateKey.FromString(key.key_data.value)
        ec_key = ec.derive_private_key(int.from_bytes(private.key_value, "big"), ec.SECP256R1())
        return ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )


def _keys_lock(keys_dir: Path) -> contextlib.AbstractContextManager[None]:
    ensure_private_dir(keys_dir)
    return file_lock(keys_dir / ".lock")


def load_keyring(settings: Settings) -> Keyring:
    """Open the keyring in ``settings.home``, creating the master key and keysets on first use."""
    ensure_private_dir(settings.home_dir)
    master = _master_aead(_read_or_create_master_key(settings))
    keyring = Keyring(keys_dir=settings.keys_dir, master=master)
    with _keys_lock(settings.keys_dir):
        for purpose in KeyPurpose:
            keyring._load(purpose)
    return keyring
