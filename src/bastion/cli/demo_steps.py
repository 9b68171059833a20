"""The steps of ``bastion demo``; imported only when the demo runs (it needs torch)."""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from bastion.cli.context import audit, keyring, out, record
from bastion.errors import BastionError, CheckFailed
from bastion.security.envelope import ArtifactKind, decrypt_file, encrypt_file, rewrap_file
from bastion.security.filescan import scan_file
from bastion.security.keys import Keyring
from bastion.security.signing import sign_path, verify_path


class _Evil:
    """Pickles as os.system(...): what a booby-trapped model file looks like."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo pwned",))


def _step(title: str, why: str) -> None:
    out.print(f"\n[bold cyan]{title}[/bold cyan]")
    for line in why.splitlines():
        out.print(f"  [dim]{line}[/dim]")


def _expect_refusal(action: Callable[[], object], what: str) -> None:
    try:
        action()
    except CheckFailed as exc:
        out.print(f"  [green]refused[/green] {what}: {exc}", soft_wrap=True)
        return
    raise BastionError(f"demo failed: {what} was accepted but must be refused")


def _encrypt_dataset(root: Path, ring: Keyring, rng: np.random.Generator) -> tuple[Path, Path]:
    _step(
        "1. Encrypt a dataset at rest",
        "Each artifact gets its own data key, wrapped by the cluster's key-encryption key.\n"
        "The header is bound into the ciphertext, so bytes cannot be changed or swapped.",
    )
    table = root / "patients.csv"
    rows = rng.normal(size=(500, 4)).round(4)
    table.write_text("age,bmi,bp,glucose\n" + "\n".join(",".join(map(str, r)) for r in rows))
    encrypted = root / "patients.csv.bastion"
    header = encrypt_file(table, encrypted, keyring=ring, kind=ArtifactKind.DATASET)
    record(
        "artifact.encrypt",
        str(encrypted),
        {"artifact_id": str(header.artifact_id), "kind": "dataset"},
    )
    out.print(f"  encrypted {table.name} -> {encrypted.name} (artifact {header.artifact_id})")
    tampered = root / "tampered.bastion"
    data = bytearray(encrypted.read_bytes())
    data[-100] ^= 0x01
    tampered.write_bytes(bytes(data))
    _expect_refusal(
        lambda: decrypt_file(tampered, root / "tampered.csv", keyring=ring), "one flipped bit"
    )
    if (root / "tampered.csv").exists():
        raise BastionError("demo failed: a refused decryption left output behind")
    return table, encrypted


def _sign_model(root: Path, ring: Keyring) -> torch.nn.Module:
    _step(
        "2. Sign a model in the OpenSSF model-signing format",
        "Weights are saved as safetensors only. The signature lists every file's SHA-256;\n"
        "any changed, added, removed or renamed file is refused.",
    )
    model_dir = root / "model"
    model_dir.mkdir()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    save_file(dict(net.state_dict()), str(model_dir / "model.safetensors"))
    (model_dir / "config.json").write_text('{"builtin": "mlp", "hidden": [16]}')
    signature = sign_path(model_dir, keyring=ring)
    record("artifact.sign", str(model_dir), {"signature": str(signature)})
    result = verify_path(model_dir, keyring=ring)
    out.print(f"  signed and verified {result.files} files ({signature.name})")
    (model_dir / "backdoor.py").write_text("print('hi')")
    _expect_refusal(lambda: verify_path(model_dir, keyring=ring), "an added file")
    (model_dir / "backdoor.py").unlink()
    return net


def _scan_files(root: Path, net: torch.nn.Module) -> None:
    _step(
        "3. Scan foreign model files before loading them",
        "Pickle-based files can run code when loaded. Only files whose every import\n"
        "rebuilds plain tensors or arrays are accepted.",
    )
    benign = root / "state_dict.pt"
    torch.save(net.state_dict(), benign)
    report = scan_file(benign)
    out.print(f"  accepted {benign.name} ({report.file_format})")
    evil = root / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Evil()))
    _expect_refusal(lambda: scan_file(evil), "a pickle that calls os.system")


def _rotate(root: Path, ring: Keyring, table: Path, encrypted: Path) -> None:
    _step(
        "4. Rotate keys and re-wrap",
        "Rotation adds a new primary key; re-wrapping re-encrypts only the small header.",
    )
    new_ids = ring.rotate()
    record("keys.rotate", "keyring", {p.value: k for p, k in new_ids.items()})
    header, _ = rewrap_file(encrypted, keyring=ring)
    record("artifact.rewrap", str(encrypted), {"kek_key_id": header.kek_key_id})
    decrypt_file(encrypted, root / "roundtrip.csv", keyring=ring)
    if (root / "roundtrip.csv").read_bytes() != table.read_bytes():
        raise BastionError("demo failed: decrypted data differs from the original")
    out.print(f"  re-wrapped under key {header.kek_key_id}; decrypts to the original bytes")


def _verify_audit() -> None:
    _step(
        "5. Verify the tamper-evident audit log",
        "Every action above is a hash-chained event; the head is signed.",
    )
    log = audit()
    log.checkpoint()
    report = log.verify()
    out.print(f"  {report.events} events verified, head {report.head_hash}")


def run_demo(root: Path) -> None:
    """Run every step in ``root``; raise a Bastion error unless each did what it says."""
    ring = keyring()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    table, encrypted = _encrypt_dataset(root, ring, np.random.default_rng(7))
    net = _sign_model(root, ring)
    _scan_files(root, net)
    _rotate(root, ring, table, encrypted)
    _verify_audit()
    out.print(f"\n[bold green]Demo complete.[/bold green] Files are in {root}")
