"""Passwords: argon2id at the library's (RFC 9106 low-memory) parameters, outside the tests'
cheap hashing (tests/conftest.py lowers them in the test process only)."""

from __future__ import annotations

import subprocess
import sys

from bastion.security.credentials import hash_password, verify_password


def test_a_control_plane_hashes_passwords_with_argon2id_at_full_cost() -> None:
    probe = (
        "from bastion.security.credentials import hash_password, verify_password\n"
        "stored = hash_password('correct horse')\n"
        "assert verify_password('correct horse', stored)\n"
        "assert not verify_password('wrong horse', stored)\n"
        "print(stored)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_a_wrong_or_missing_password_is_refused() -> None:
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("correct horse", None)
    assert not verify_password("correct horse", "not a hash")
