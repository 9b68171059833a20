"""The federation's certificates and SuperNode keys, made with ``cryptography``.

The SuperLink serves TLS with a certificate of a CA made for this federation alone (valid a
day; its key never leaves the aggregator's folder): the sites trust that CA and nothing else.
Each site holds a P-384 key (OpenSSH format, as Flower's SuperNode authentication reads it);
the SuperLink admits a SuperNode only once its public key was registered, so exactly the
named sites can join.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.files import atomic_write_bytes

__all__ = [
    "LinkCertificates",
    "key_fingerprint",
    "link_certificates",
    "made_link",
    "site_key",
]

_VALID = dt.timedelta(days=1)
#: Where a site's SuperNode dials in its sandbox (the relay's link): named by every link
#: certificate too.
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LinkCertificates:
    ca: Path
    certificate: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def link_certificates(folder: Path, *, host: str) -> LinkCertificates:
    """A CA for this federation and the SuperLink's certificate for ``host`` (an address or
    a name) and :data:`LOOPBACK`, both valid a day; the keys are written 0600."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Bastion federation CA"))
        .issuer_name(_name("Bastion federation CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    try:
        alternative: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alternative = x509.DNSName(host)
    # A site's SuperNode dials 127.0.0.1 inside its sandbox: the relay's link, which joins
    # the connection to the aggregator (bastion.agent.link). Only this federation's sites
    # trust the CA, and only this certificate is issued by it.
    names = list(dict.fromkeys([alternative, x509.IPAddress(ipaddress.ip_address(LOOPBACK))]))
    link_key = ec.generate_private_key(ec.SECP256R1())
    link = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(link_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = LinkCertificates(folder / "ca.pem", folder / "link.pem", folder / "link.key")
    atomic_write_bytes(paths.ca, ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write_bytes(paths.certificate, link.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write_bytes(paths.key, _pem_key(link_key))
    return paths


def made_link(folder: Path) -> LinkCertificates | None:
    """The CA and link certificate :func:`link_certificates` wrote in ``folder`` (the agent
    makes them before the job starts, to endorse the CA), or None where it wrote none."""
    paths = LinkCertificates(folder / "ca.pem", folder / "link.pem", folder / "link.key")
    return paths if all(p.is_file() for p in (paths.ca, paths.certificate, paths.key)) else None


def site_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A site's P-384 key pair in OpenSSH format: (private 0600, public)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    atomic_write_bytes(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    atomic_write_bytes(
        public,
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        mode=0o644,
    )
    return private, public


def key_fingerprint(public_key: str | bytes) -> str:
    """SHA-256 of a public key's DER SubjectPublicKeyInfo (hex), from its OpenSSH form (what
    a site posts) or its PEM form (what the SuperLink logs of a node it refused): the same
    key gives the same fingerprint either way."""
    data = public_key.encode() if isinstance(public_key, str) else public_key
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
    else:
        key = serialization.load_ssh_public_key(data)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()
