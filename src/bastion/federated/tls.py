"""The federation's certificates and SuperNode keys, made with ``cryptography``.

The SuperLink serves TLS with a certificate of a CA made for this federation alone (valid a
day; its key never leaves the aggregator's folder): the sites trust that CA and nothing else.
Each site holds a P-384 key (OpenSSH format, as Flower's SuperNode authentication reads it);
the SuperLink admits a SuperNode only once its public key was registered, so exactly the
named sites can join.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.files import atomic_write_bytes

__all__ = ["LinkCertificates", "link_certificates", "site_key"]

_VALID = dt.timedelta(days=1)


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
    a name), both valid a day; the keys are written 0600."""
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
    link_key = ec.generate_private_key(ec.SECP256R1())
    link = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(link_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
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
