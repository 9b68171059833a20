"""Endorsements: a cluster's signing key vouches for what its federated job posts.

The federation's CA (the aggregator's) and each site's SuperNode key are made by the agent
before it starts the job, and the agent signs a statement binding that material to the job's
run with the cluster's signing key (ECDSA P-256, the key that signs its models; the job holds
none). The control plane checks the statement against the public key the cluster published
when it joined before it records the material, and each other participant's job checks it
again against that published key before it trusts the CA or admits the node: a CA or node
key that did not come from the named cluster's agent is refused, whoever relays it.

The statement is ``PURPOSE``, the run's id and the SHA-256 of the material, one per line;
the signature is plain X9.62 ECDSA over it (Tink's RAW output, as every Bastion signature).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.errors import SignatureError

__all__ = ["PURPOSE", "check", "endorse", "statement"]

PURPOSE = b"bastion federation endorsement v1"
#: The longest endorsement accepted (a DER ECDSA P-256 signature is at most 72 bytes).
MAX_ENDORSEMENT = 200


def statement(run_id: str, material: str) -> bytes:
    """What a cluster signs: that ``material`` (a PEM CA certificate or an OpenSSH public
    key, outer whitespace aside) is its job's for run ``run_id``."""
    digest = hashlib.sha256(material.strip().encode()).hexdigest()
    return b"\n".join((PURPOSE, run_id.encode(), digest.encode()))


def endorse(sign: Callable[[bytes], bytes], *, run_id: str, material: str) -> str:
    """The endorsement (base64) of ``material`` for ``run_id``, signed by ``sign`` (a
    keyring's signer)."""
    return base64.b64encode(sign(statement(run_id, material))).decode()


def check(public_pem: str, *, run_id: str, material: str, endorsement: object, who: str) -> None:
    """Raise :class:`SignatureError` naming ``who`` unless ``endorsement`` is ``public_pem``'s
    signature of ``material`` for ``run_id``."""
    if not isinstance(endorsement, str) or not 0 < len(endorsement) <= MAX_ENDORSEMENT:
        raise SignatureError(f"{who}: no endorsement by its cluster's signing key")
    try:
        signature = base64.b64decode(endorsement, validate=True)
        public = serialization.load_pem_public_key(public_pem.encode())
    except (binascii.Error, ValueError):
        raise SignatureError(f"{who}: the endorsement or its cluster's key is malformed") from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SignatureError(f"{who}: its cluster's signing key is not an ECDSA key")
    try:
        public.verify(signature, statement(run_id, material), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError(
            f"{who}: not endorsed by its cluster's signing key (made elsewhere, or for another run)"
        ) from None
