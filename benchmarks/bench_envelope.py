"""Envelope encryption throughput versus raw AES-256-GCM from `cryptography`.

Headline (artifact on disk): both sides read the same plaintext file in 1 MiB
chunks, encrypt to a file, then decrypt back to a file. The baseline encrypts
every chunk with `cryptography`'s AESGCM (a fresh nonce per chunk; no key
management, header or segment chaining): the practical limit on this machine.
Each side runs in a fresh child process so its peak memory is its own.

Also printed (crypto only): the same bytes from memory to memory, no file I/O.

    python benchmarks/bench_envelope.py [--size-mib 1024] [--reps 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

CHUNK = 1 << 20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bastion(source: str, work: str, home: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    os.environ["BASTION_HOME"] = home
    from bastion.config import Settings
    from bastion.security.envelope import decrypt_file, encrypt_file
    from bastion.security.keys import load_keyring

    ring = load_keyring(Settings())
    base = _peak_mib()
    started = time.perf_counter()
    encrypt_file(Path(source), Path(work) / "b.enc", keyring=ring)
    decrypt_file(Path(work) / "b.enc", Path(work) / "b.dec", keyring=ring)
    elapsed = time.perf_counter() - started
    queue.put((elapsed, _peak_mib() - base))


def _raw_aesgcm(source: str, work: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    base = _peak_mib()
    started = time.perf_counter()
    with open(source, "rb") as src, open(Path(work) / "r.enc", "wb") as dst:
        while chunk := src.read(CHUNK):
            nonce = os.urandom(12)
            dst.write(nonce + aead.encrypt(nonce, chunk, None))
    with open(Path(work) / "r.enc", "rb") as src, open(Path(work) / "r.dec", "wb") as dst:
        while block := src.read(CHUNK + 28):
            dst.write(aead.decrypt(block[:12], block[12:], None))
    elapsed = time.perf_counter() - started
    queue.put((elapsed, _peak_mib() - base))


def _memory_bastion(size_mib: str, home: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import io

    os.environ["BASTION_HOME"] = home
    from bastion.config import Settings
    from bastion.security.envelope import ArtifactKind, decrypt_stream, encrypt_stream
    from bastion.security.keys import load_keyring

    ring = load_keyring(Settings())
    source = _Repeat(int(size_mib))
    sealed = io.BytesIO()
    started = time.perf_counter()
    encrypt_stream(cast(BinaryIO, source), sealed, keyring=ring, kind=ArtifactKind.FILE)
    sealed.seek(0)
    decrypt_stream(sealed, cast(BinaryIO, _Null()), keyring=ring)
    queue.put((time.perf_counter() - started, 0.0))


def _memory_raw(size_mib: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    source, sink = _Repeat(int(size_mib)), _Null()
    sealed = []
    started = time.perf_counter()
    while chunk := source.read(CHUNK):
        nonce = os.urandom(12)
        sealed.append(nonce + aead.encrypt(nonce, chunk, None))
    for block in sealed:
        sink.write(aead.decrypt(block[:12], block[12:], None))
    queue.put((time.perf_counter() - started, 0.0))


class _Repeat:
    """``count`` MiB of the same random chunk."""

    def __init__(self, count: int) -> None:
        self._left = count
        self._chunk = os.urandom(CHUNK)

    def read(self, _size: int = -1) -> bytes:
        if self._left == 0:
            return b""
        self._left -= 1
        return self._chunk


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)


def _run(target: Callable[..., object], *args: str) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result: tuple[float, float] = queue.get(timeout=3600)
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the files go (default: system temp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        source = work / "plain.bin"
        with source.open("wb") as handle:
            block = os.urandom(CHUNK)
            for _ in range(args.size_mib):
                handle.write(block)
        home = work / "home"
        os.environ["BASTION_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
        bastion: list[tuple[float, float]] = []
        raw: list[tuple[float, float]] = []
        mem_bastion: list[tuple[float, float]] = []
        mem_raw: list[tuple[float, float]] = []
        for rep in range(args.reps):
            # Alternate who goes first so page-cache and write-back effects even out.
            order: list[tuple[list[tuple[float, float]], Callable[..., None], tuple[str, ...]]] = [
                (bastion, _bastion, (str(source), str(work), str(home))),
                (raw, _raw_aesgcm, (str(source), str(work))),
            ]
            for results, target, target_args in order if rep % 2 == 0 else order[::-1]:
                results.append(_run(target, *target_args))
                for name in ("b.enc", "b.dec", "r.enc", "r.dec"):
                    (work / name).unlink(missing_ok=True)
            mem_bastion.append(_run(_memory_bastion, str(args.size_mib), str(home)))
            mem_raw.append(_run(_memory_raw, str(args.size_mib)))
    mib = 2 * args.size_mib  # encrypted once and decrypted once
    print(f"envelope: {args.size_mib} MiB encrypt+decrypt, median of {args.reps} runs")
    ratios = []
    for label, ours, theirs in (
        ("artifact on disk", bastion, raw),
        ("crypto only, in memory", mem_bastion, mem_raw),
    ):
        b_time = statistics.median(t for t, _ in ours)
        r_time = statistics.median(t for t, _ in theirs)
        ratios.append(r_time / b_time)
        print(f"  [{label}]")
        print(f"    bastion envelope (Tink AES256_GCM_HKDF_1MB): {mib / b_time:8.1f} MiB/s")
        print(f"    raw cryptography AES-256-GCM, 1 MiB chunks:  {mib / r_time:8.1f} MiB/s")
        print(f"    ratio bastion/raw: {ratios[-1]:.2f}")
    peak = max(m for _, m in bastion)
    print(f"  bastion peak memory growth: {peak:.1f} MiB  (target < 200 MiB)")
    print(f"  headline ratio (artifact on disk): {ratios[0]:.2f}  (target >= 0.50)")


if __name__ == "__main__":
    main()
