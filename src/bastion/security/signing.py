"""Sign and verify files and directories in the OpenSSF model-signing format.

``bastion sign PATH`` writes ``PATH.sig`` beside the artifact: a Sigstore bundle
whose DSSE envelope carries an in-toto statement listing every file with its
SHA-256, signed with the keyring's ECDSA P-256 key. Anyone holding the public key
can check it with the upstream tool::

    model_signing verify key PATH --signature PATH.sig --public_key key.pem \\
        --no-ignore-git-paths

Bastion hashes every file, git metadata included, and refuses symlinks, so any
changed, added, removed or renamed file breaks verification.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from model_signing import hashing, signing, verifying

from bastion.errors import InvalidInput, SignatureError
from bastion.files import fsync_dir
from bastion.security.keys import Keyring, public_key_fingerprint

__all__ = ["Verified", "sign_path", "signature_path_for", "verify_path"]

SIGNATURE_SUFFIX = ".sig"


@dataclass(frozen=True)
class Verified:
    """What a successful verification established."""

    path: Path
    signature: Path
    key_fingerprint: str
    files: int


def signature_path_for(path: Path) -> Path:
    """Where the signature of ``path`` lives: beside it, named ``<name>.sig``."""
    resolved = path.resolve()
    return resolved.with_name(resolved.name + SIGNATURE_SUFFIX)


def _hashing_config() -> hashing.Config:
    return (
        hashing.Config()  # type: ignore[no-untyped-call]
        .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
        .set_ignored_paths(paths=[], ignore_git_paths=False)
    )


@contextlib.contextmanager
def _private_tempdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bastion-sign-") as name:
        os.chmod(name, 0o700)
        yield Path(name)


def _check_target(path: Path) -> Path:
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or directory")
    if path.is_symlink():
        raise InvalidInput(f"{path}: is a symbolic link; sign the real file or directory")
    return path.resolve()


def sign_path(path: Path, *, keyring: Keyring, signature: Path | None = None) -> Path:
    """Sign a file or directory with the primary signing key; return the signature path."""
    target = _check_target(path)
    signature = signature or signature_path_for(target)
    if signature.resolve().is_relative_to(target) and target.is_dir():
        raise InvalidInput(f"{signature}: the signature cannot live inside the signed directory")
    password = base64.b64encode(os.urandom(32))
    with _private_tempdir() as tmp:
        key_file = tmp / "signing-key.pem"
        key_file.write_bytes(keyring.encrypted_signing_pem(password))
        staged = tmp / "signature.sig"
        try:
            (
                signing.Config()  # type: ignore[no-untyped-call]
                .set_hashing_config(_hashing_config())
                # model-signing hands the password to `cryptography`, which wants bytes.
                .use_elliptic_key_signer(private_key=key_file, password=password)  # type: ignore[arg-type]
                .sign(target, staged)
            )
        except ValueError as exc:
            raise InvalidInput(f"{path}: cannot sign: {exc}") from None
        tmp_sig = signature.with_name(f".{signature.name}.tmp")
        tmp_sig.write_bytes(staged.read_bytes())
        with tmp_sig.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_sig, signature)
        fsync_dir(signature.parent)
    return signature


def _bundle_key_hint(signature: Path) -> str:
    try:
        bundle = json.loads(signature.read_bytes())
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SignatureError(
            f"{signature}: signature file is damaged or not a model-signing bundle; "
            "re-sign the artifact with 'bastion sign'"
        ) from None
    if not isinstance(hint, str):
        raise SignatureError(f"{signature}: signature file has no key hint; re-sign it")
    return hint


_DIFF_PATTERNS = (
    (re.compile(r"Hash mismatch for \\*'([^'\\]*)"), "changed: {}"),
    (re.compile(r"Extra files found in model \\*'[^']*': ([^\"'\]\\]*)"), "added or renamed: {}"),
    (re.compile(r"Missing files in model \\*'[^']*': ([^\"'\]\\]*)"), "removed or renamed: {}"),
)


def _explain(exc: Exception, target: Path) -> str:
    """Turn model-signing's manifest diff into 'changed: a; added or renamed: b'."""
    text = str(exc)
    found = [
        template.format(target.name if match == "." else match)
        for pattern, template in _DIFF_PATTERNS
        for match in pattern.findall(text)
    ]
    if found:
        return "; ".join(found)
    if "Key mismatch" in text or "InvalidSignature" in type(exc).__name__:
        return "the signature does not match the trusted key (damaged or forged signature)"
    return text or type(exc).__name__


def _count_files(target: Path) -> int:
    if target.is_file():
        return 1
    return sum(1 for p in target.rglob("*") if p.is_file())


def verify_path(
    path: Path,
    *,
    keyring: Keyring | None = None,
    public_key_pem: bytes | None = None,
    signature: Path | None = None,
) -> Verified:
    """Verify ``path`` against its signature; raise :class:`SignatureError` on any mismatch.

    Trusted keys are the keyring's signing keys (current and rotated-out) or the one
    ``public_key_pem`` given.
    """
    target = _check_target(path)
    signature = signature or signature_path_for(target)
    # (1) The signature must exist.
    if not signature.is_file():
        raise SignatureError(
            f"{path}: no signature at {signature}; sign it with 'bastion sign {path}'"
        )
    # (2) Choose the trusted key the bundle names; refuse foreign keys.
    trusted: dict[str, bytes] = {}
    if public_key_pem is not None:
        trusted[public_key_fingerprint(public_key_pem)] = public_key_pem
    if keyring is not None:
        trusted.update({key.fingerprint: key.public_pem for key in keyring.signing_keys()})
    if not trusted:
        raise SignatureError("no trusted public key given; pass a keyring or a public key")
    hint = _bundle_key_hint(signature)
    if hint not in trusted:
        raise SignatureError(
            f"{path}: signed by key {hint[:16]}..., which is not trusted here; verify with "
            "the signer's public key (--public-key)"
        )
    # (3) Check the envelope signature and every file's digest.
    with _private_tempdir() as tmp:
        key_file = tmp / "public.pem"
        key_file.write_bytes(trusted[hint])
        try:
            (
                verifying.Config()  # type: ignore[no-untyped-call]
                .set_hashing_config(_hashing_config())
                .use_elliptic_key_verifier(public_key=key_file)
                .verify(target, signature)
            )
        except Exception as exc:  # any failure inside the verifier is a refusal
            raise SignatureError(
                f"{path}: signature verification failed: {_explain(exc, target)}"
            ) from None
    return Verified(
        path=target, signature=signature, key_fingerprint=hint, files=_count_files(target)
    )
