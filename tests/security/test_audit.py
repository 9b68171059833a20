"""The audit chain: appends, signed checkpoints, and every kind of tampering named."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import random
import string
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from sqlalchemy import Engine

from bastion.config import Settings
from bastion.db import create_db_engine
from bastion.errors import AuditChainError, InvalidInput
from bastion.security.audit_chain import (
    CHECKPOINT_ACTION,
    EventRow,
    VerifiedPrefix,
    canonical_json,
)
from bastion.security.audit_export import verify_export
from bastion.security.audit_log import (
    AuditEvent,
    AuditLog,
    KeyringCheckpointSigner,
    open_local_audit_log,
)
from bastion.security.keys import Keyring, load_keyring
from tests.conftest import Cli, other_keyring
from tests.security import audit_helpers as tamper


def _log(engine: Engine, keyring: Keyring | None, tmp_path: Path, interval: int = 10) -> AuditLog:
    return AuditLog(
        engine,
        signer=KeyringCheckpointSigner(keyring) if keyring else None,
        trusted_keys=[k.public_pem for k in keyring.signing_keys()] if keyring else (),
        checkpoint_interval=interval,
        anchor_path=tmp_path / "anchor.json",
    )


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return create_db_engine(f"sqlite:///{tmp_path / 'audit.db'}")


def _fill(log: AuditLog, count: int) -> None:
    log.append_many(
        [
            AuditEvent(
                actor="alice",
                action="artifact.encrypt",
                target=f"file-{i}",
                details={"i": i, "note": "données"},
            )
            for i in range(count)
        ]
    )


def _expect(log: AuditLog, kind: str, seq: int | None) -> AuditChainError:
    with pytest.raises(AuditChainError) as info:
        log.verify()
    assert (info.value.kind, info.value.seq) == (kind, seq), str(info.value)
    return info.value


def test_append_and_verify(engine: Engine, tmp_path: Path) -> None:
    log = _log(engine, None, tmp_path)
    _fill(log, 25)
    stored = tamper.rows(engine)
    assert [r.seq for r in stored] == list(range(1, 26))
    assert stored[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(stored))
    report = log.verify()
    assert (report.events, report.head_seq, report.head_hash) == (25, 25, stored[-1].hash)


def test_hash_is_sha256_of_canonical_record(engine: Engine, tmp_path: Path) -> None:
    import hashlib

    log = _log(engine, None, tmp_path)
    row = log.append(
        actor="bob", action="keys.rotate", target="keyring", details={"b": [1, "ü"], "a": None}
    )
    record = {
        "seq": row.seq,
        "ts": row.ts,
        "actor": "bob",
        "action": "keys.rotate",
        "target": "keyring",
        "details": {"a": None, "b": [1, "ü"]},
        "prev_hash": "0" * 64,
    }
    expected = rfc8785.dumps(record)  # type: ignore[arg-type]
    assert row.hash == hashlib.sha256(expected).hexdigest()


def test_canonical_json_matches_rfc8785() -> None:
    rng = random.Random(3)

    def value(depth: int) -> Any:
        pick = rng.randrange(7 if depth < 3 else 4)
        if pick == 0:
            return rng.randrange(-(2**53) + 1, 2**53)
        if pick == 1:
            return "".join(rng.choice(string.printable + "éü中\u2028\x00\x1f") for _ in range(8))
        if pick == 2:
            return rng.choice([True, False, None])
        if pick == 3:
            return ""
        if pick in (4, 5):
            return {
                "".join(rng.choices(string.ascii_letters, k=4)): value(depth + 1) for _ in range(3)
            }
        return [value(depth + 1) for _ in range(3)]

    for _ in range(300):
        sample = {"root": value(0)}
        assert canonical_json(sample) == rfc8785.dumps(sample)


@pytest.mark.parametrize(
    ("details", "message"),
    [
        ({"x": 0.5}, "floats are not allowed"),
        ({"ключ": 1}, "keys must be ASCII"),
        ({"n": 2**60}, "exceeds 2"),
        ({"s": {1, 2}}, "unsupported type"),
    ],
)
def test_details_are_validated(
    engine: Engine, tmp_path: Path, details: dict[str, Any], message: str
) -> None:
    log = _log(engine, None, tmp_path)
    with pytest.raises(InvalidInput, match=message):
        log.append(actor="a", action="b", target="c", details=details)
    assert log.count() == 0


def test_modified_event_is_named(engine: Engine, tmp_path: Path) -> None:
    log = _log(engine, None, tmp_path)
    _fill(log, 20)
    tamper.execute(engine, "UPDATE audit_events SET target = 'innocent' WHERE seq = 7")
    _expect(log, "modified", 7)


def test_modified_actor_and_timestamp(engine: Engine, tmp_path: Path) -> None:
    log = _log(engine, None, tmp_path)
    _fill(log, 20)
    tamper.execute(
        engine, "UPDATE audit_events SET ts = '2020-01-01T00:00:00.000000Z' WHERE seq = 1"
    )
    _expect(log, "modified", 1)


def test_deleted_event_is_named(engine: Engine, tmp_path: Path) -> None:
    log = _log(engine, None, tmp_path)
    _fill(log, 20)
    tamper.execute(engine, "DELETE FROM audit_events WHERE seq = 9")
    _expect(log, "deleted", 9)


def test_deleted_and_renumbered_is_named(engine: Engine, tmp_path: Path) -> None:
    log = _log(engine, None, tmp_path)
    _fill(log, 20)
    tamper.execute(engine, "DELETE FROM audit_events WHERE seq = 9")
    tamper.shift_seqs(engine, from_seq=10, delta=-1)
    _expect(log, "deleted", 9)


def test_inserted_event_is_named(engine: Engine, tmp_path: Path) -> None:
    log = _log(engine, None, tmp_path)
    _fill(log, 20)
    stored = tamper.rows(engine)
    tamper.shift_seqs(engine, from_seq=6, delta=1)
    draft = EventRow(
        6, stored[4].ts, "mallory", "artifact.decrypt", "secret", "{}", stored[4].hash, ""
    )
    forged = draft._replace(hash=draft.computed_hash())
    tamper.insert_row(engine, forged)
    _expect(log, "inserted", 6)


def test_inserted_event_with_bad_hash_is_named(engine: Engine, tmp_path: Path) -> None:
    log = _log(engine, None, tmp_path)
    _fill(log, 20)
    tamper.shift_seqs(engine, from_seq=6, delta=1)
    tamper.insert_row(engine, EventRow(6, "t", "mallory", "x", "y", "{}", "junk", "f" * 64))
    _expect(log, "inserted", 6)


def test_reordered_events_are_named(engine: Engine, tmp_path: Path) -> None:
    log = _log(engine, None, tmp_path)
    _fill(log, 20)
    tamper.execute(
        engine,
        "UPDATE audit_events SET seq = 1000 WHERE seq = 5",
        "UPDATE audit_events SET seq = 5 WHERE seq = 6",
        "UPDATE audit_events SET seq = 6 WHERE seq = 1000",
    )
    _expect(log, "reordered", 5)


def test_checkpoints_every_interval_and_on_demand(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=5)
    _fill(log, 12)
    stored = tamper.rows(engine)
    checkpoints = [r for r in stored if r.action == CHECKPOINT_ACTION]
    # Checkpoint events count as events: seq 6 signs seq 5, seq 11 signs seq 10.
    assert [json.loads(r.details)["seq"] for r in checkpoints] == [5, 10]
    assert len(stored) == 14
    on_demand = log.checkpoint()
    assert on_demand.seq == 14
    assert json.loads((tmp_path / "anchor.json").read_text())["seq"] == 14
    report = log.verify()
    # The checkpoint event (seq 15) carries the signature itself: nothing is left unsigned.
    assert (report.checkpoints, report.last_checkpoint_seq) == (3, 14)
    assert (report.signed_through, report.unsigned_tail, report.unsigned_since) == (15, 0, None)


def test_the_unsigned_tail_is_reported_with_its_age(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=1000)
    _fill(log, 3)
    first_written = tamper.rows(engine)[0].ts
    report = log.verify()
    assert (report.checkpoints, report.signed_through, report.unsigned_tail) == (0, 0, 3)
    assert report.unsigned_since == first_written
    assert log.checkpoint_if_new() is not None
    assert log.checkpoint_if_new() is None  # nothing new since: no second checkpoint event
    assert log.count() == 4
    _fill(log, 2)
    report = log.verify()
    assert (report.signed_through, report.unsigned_tail) == (4, 2)
    assert report.unsigned_since == tamper.rows(engine)[4].ts


def test_a_rewritten_event_with_its_own_hash_recomputed_breaks_the_next_link(
    engine: Engine, tmp_path: Path
) -> None:
    # Only the link check can see this one: every event's own hash matches its content.
    log = _log(engine, None, tmp_path)
    _fill(log, 10)
    forged = tamper.rows(engine)[3]._replace(target="innocent")
    forged = forged._replace(hash=forged.computed_hash())
    tamper.execute(
        engine,
        f"UPDATE audit_events SET target = 'innocent', hash = '{forged.hash}' WHERE seq = 4",
    )
    error = _expect(log, "modified", 4)
    assert "no longer links" in str(error)


def test_truncation_after_signed_checkpoint_is_named(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=1000)
    _fill(log, 30)
    log.checkpoint()  # signs seq 30, appends the checkpoint as seq 31
    tamper.execute(engine, "DELETE FROM audit_events WHERE seq >= 26")
    error = _expect(log, "truncated", 26)
    assert "seq 30 was signed" in str(error)


def test_consistent_rewrite_is_caught_by_checkpoint(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=10)
    _fill(log, 25)
    tamper.rewrite_from(engine, 14, '{"i":999}')
    # Seq 11 (the checkpoint of seq 10) is the first event not covered by a valid signature.
    error = _expect(log, "modified", 11)
    assert "rewritten" in str(error)


def test_untrusted_checkpoint_signature_is_named(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=10)
    _fill(log, 12)
    stranger = other_keyring(tmp_path / "stranger")
    with pytest.raises(AuditChainError) as info:
        log.verify(trusted_keys=[stranger.primary_signing_key().public_pem])
    assert (info.value.kind, info.value.seq) == ("signature", 11)


def _append_worker(url: str, home: str, worker: int, count: int) -> None:
    settings = Settings(home=Path(home), local_audit_database_url=url, audit_checkpoint_interval=50)
    log = open_local_audit_log(settings, load_keyring(settings))
    for i in range(count):
        log.append(actor=f"worker-{worker}", action="test.append", target=str(i))


def _concurrent_appends(url: str, home: Path) -> AuditLog:
    settings = Settings(home=home, local_audit_database_url=url, audit_checkpoint_interval=50)
    log = open_local_audit_log(settings, load_keyring(settings))  # creates keys and schema first
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_append_worker, args=(url, str(home), w, 120)) for w in range(2)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=240)
        assert process.exitcode == 0
    return log


def test_two_processes_append_one_chain(home: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    log = _concurrent_appends(url, home)
    report = log.verify()
    stored = list(log.rows())
    user_events = [r for r in stored if r.action == "test.append"]
    assert len(user_events) == 240
    assert {r.actor for r in user_events} == {"worker-0", "worker-1"}
    assert report.checkpoints == 4 and report.events == len(stored) == 244


def _export(log: AuditLog, tmp_path: Path) -> tuple[Path, list[bytes]]:
    exported = tmp_path / "audit.jsonl"
    log.export(exported)
    return exported, exported.read_bytes().splitlines()


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def _refused(path: Path, pem: bytes) -> AuditChainError:
    with pytest.raises(AuditChainError) as info:
        verify_export(path, public_keys=[pem])
    return info.value


def test_export_verifies_offline_with_public_key(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=10)
    _fill(log, 23)  # checkpoints at seq 11 and 22; head 25
    exported = tmp_path / "audit.jsonl"
    assert log.export(exported) == 26  # the export signed the head: checkpoint event seq 26
    lines = exported.read_bytes().splitlines()
    assert all(canonical_json(json.loads(line)) == line for line in lines)
    header = json.loads(lines[0])
    assert header["export"] == "bastion-audit-export/v1" and header["head"]["seq"] == 26
    assert header["head"]["hash"] == json.loads(lines[-1])["hash"]
    pem = keyring.primary_signing_key().public_pem
    report = verify_export(exported, public_keys=[pem])
    assert (report.events, report.checkpoints, report.unsigned_tail) == (26, 3, 0)
    # A second export with nothing new adds no checkpoint event.
    assert log.export(tmp_path / "again.jsonl") == 26
    # Tampering with the export is caught too.
    event = json.loads(lines[4])
    event["target"] = "something else"
    lines[4] = canonical_json(event)
    _write_lines(exported, lines)
    error = _refused(exported, pem)
    assert (error.kind, error.seq) == ("modified", 4)


def test_an_export_whose_tail_was_rewritten_and_rehashed_is_refused(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=1000)  # no in-chain checkpoint but the export's
    _fill(log, 8)
    exported, lines = _export(log, tmp_path)
    pem = keyring.primary_signing_key().public_pem
    # Rewrite event 5 and recompute every later hash: each link and hash is consistent.
    forged, prev_hash = lines[:5], json.loads(lines[4])["hash"]  # the header, events 1 to 4
    for line in lines[5:]:
        event = json.loads(line)
        if event["seq"] == 5:
            event["actor"] = "someone-else"
        event["prev_hash"] = prev_hash
        row = EventRow(**{**event, "details": canonical_json(event["details"]).decode()})
        event["hash"] = prev_hash = row.computed_hash()
        forged.append(canonical_json(event))
    _write_lines(exported, forged)
    error = _refused(exported, pem)  # the export's checkpoint event (seq 9) no longer matches
    assert error.kind == "modified" and "rewritten" in str(error)
    # Without that checkpoint event (its signature cannot be forged), the signed head says
    # the export reached seq 9.
    _write_lines(exported, forged[:-1])
    error = _refused(exported, pem)
    assert (error.kind, error.seq) == ("truncated", 9)


def test_an_export_whose_tail_was_cut_is_refused(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=5)
    _fill(log, 12)  # in-chain checkpoints at seq 6 and 11; the export's at 15
    exported, lines = _export(log, tmp_path)
    pem = keyring.primary_signing_key().public_pem
    _write_lines(exported, lines[:12])  # cut right after the in-chain checkpoint at seq 11
    error = _refused(exported, pem)
    assert (error.kind, error.seq) == ("truncated", 12)
    assert "seq 15 was signed" in str(error)


def test_an_export_without_its_signed_head_is_refused_naming_the_uncovered_events(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=5)
    _fill(log, 12)
    exported, lines = _export(log, tmp_path)
    pem = keyring.primary_signing_key().public_pem
    # The old format: events only, cut after seq 13 (two events past the last checkpoint).
    _write_lines(exported, lines[1:14])
    error = _refused(exported, pem)
    assert (error.kind, error.seq) == ("truncated", 12)
    assert "no signed head" in str(error) and "seq 12 to 13 are covered by no signature" in str(
        error
    )
    # Without its header even a complete export is refused: its end cannot be proven.
    _write_lines(exported, lines[1:])
    assert "no signed head" in str(_refused(exported, pem))


def test_events_appended_after_the_signed_head_are_refused(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=1000)
    _fill(log, 4)
    exported, lines = _export(log, tmp_path)
    pem = keyring.primary_signing_key().public_pem
    last = json.loads(lines[-1])
    extra = EventRow(6, last["ts"], "mallory", "model.approve", "m@1", "{}", last["hash"], "")
    extra = extra._replace(hash=extra.computed_hash())
    _write_lines(exported, [*lines, canonical_json(extra.to_export())])
    error = _refused(exported, pem)
    assert (error.kind, error.seq) == ("inserted", 6)
    assert "seq 6 are covered by no signed checkpoint" in str(error)


def test_an_export_header_signed_by_a_stranger_is_refused(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=1000)
    _fill(log, 4)
    exported, _ = _export(log, tmp_path)
    stranger = other_keyring(tmp_path / "stranger").primary_signing_key().public_pem
    assert _refused(exported, stranger).kind == "signature"


def test_cli_records_every_mutating_verb_and_verifies(cli: Cli, tmp_path: Path) -> None:
    plain = tmp_path / "p.txt"
    plain.write_text("hello")
    enc = tmp_path / "p.enc"
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.safetensors").write_bytes(b"w")
    for args in (
        ("encrypt", plain, enc),
        ("decrypt", enc, tmp_path / "p.out"),
        ("keys", "rotate"),
        ("keys", "rewrap", enc),
        ("sign", model),
        ("shred", enc, "--yes"),
    ):
        assert cli(*args).code == 0
    actions = [
        row.action for row in open_local_audit_log(Settings(), load_keyring(Settings())).rows()
    ]
    assert actions == [
        "artifact.encrypt",
        "artifact.decrypt",
        "keys.rotate",
        "artifact.rewrap",
        "artifact.sign",
        "artifact.shred",
    ]
    result = cli("audit", "verify")
    assert result.code == 0
    head = tamper.rows(create_db_engine(Settings().local_audit_database))[-1].hash
    assert result.stdout.splitlines()[0] == f"6 events verified, head {head}"


def test_cli_audit_verify_names_tampering(cli: Cli, tmp_path: Path) -> None:
    plain = tmp_path / "p.txt"
    plain.write_text("hello")
    for i in range(3):
        assert cli("encrypt", plain, tmp_path / f"p{i}.enc").code == 0
    engine = create_db_engine(Settings().local_audit_database)
    tamper.execute(engine, "UPDATE audit_events SET actor = 'local:someone-else' WHERE seq = 2")
    result = cli("audit", "verify")
    assert result.code == 1
    assert "seq 2" in result.stderr and "modified" in result.stderr


def test_cli_export_and_offline_verify(cli: Cli, tmp_path: Path) -> None:
    plain = tmp_path / "p.txt"
    plain.write_text("hello")
    assert cli("encrypt", plain, tmp_path / "p.enc").code == 0
    exported, pem = tmp_path / "audit.jsonl", tmp_path / "pub.pem"
    assert cli("audit", "export", exported).code == 0
    assert cli("keys", "export-public", pem).code == 0
    result = cli("audit", "verify", "--file", exported, "--public-key", pem)
    assert result.code == 0 and "events verified" in result.stdout
    stranger = tmp_path / "stranger.pem"
    stranger.write_bytes(other_keyring(tmp_path / "s").primary_signing_key().public_pem)
    refused = cli("audit", "verify", "--file", exported, "--public-key", stranger)
    assert refused.code == 1 and "signature" in refused.stderr
    assert cli("audit", "verify", "--file", exported).code == 2
    tail = cli("audit", "tail", "-n", "2")
    assert tail.code == 0 and "audit.checkpoint" in tail.stdout


def test_a_resumed_verification_equals_the_full_one_and_reads_only_the_tail(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=5)
    _fill(log, 12)  # checkpoints at seq 6 (signs 5) and 11 (signs 10); head 14
    first = log.verify()
    assert first.prefix is not None and first.resumed_from is None
    assert (first.prefix.seq, first.prefix.signed_seq, first.prefix.events) == (11, 10, 11)
    _fill(log, 9)
    resumed = log.verify(since=first.prefix)
    full = log.verify()
    assert resumed.resumed_from == first.prefix
    for field in ("events", "head_seq", "head_hash", "checkpoints", "last_checkpoint_seq"):
        assert getattr(resumed, field) == getattr(full, field), field
    assert resumed.prefix == full.prefix and resumed.prefix is not None
    assert resumed.prefix.seq > first.prefix.seq
    # Nothing new since the prefix: still a valid report, of the same head.
    again = log.verify(since=full.prefix)
    assert (again.events, again.head_hash) == (full.events, full.head_hash)


def _verified(engine: Engine, keyring: Keyring, tmp_path: Path) -> tuple[AuditLog, VerifiedPrefix]:
    """A log of 14 events (checkpoints at seq 6 and 11) and the prefix its verification left."""
    log = _log(engine, keyring, tmp_path, interval=5)
    _fill(log, 12)
    prefix = log.verify().prefix
    assert prefix is not None and prefix.seq == 11
    return log, prefix


def test_a_resumed_verification_finds_tampering_after_its_prefix(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log, prefix = _verified(engine, keyring, tmp_path)
    _fill(log, 6)
    tamper.execute(
        engine, f"UPDATE audit_events SET actor = 'mallory' WHERE seq = {prefix.seq + 3}"
    )
    # The failure is named as a verification from the start names it.
    with pytest.raises(AuditChainError) as info:
        log.verify(since=prefix)
    assert (info.value.kind, info.value.seq) == ("modified", prefix.seq + 3)


def test_a_changed_prefix_falls_back_to_the_whole_chain(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log, prefix = _verified(engine, keyring, tmp_path)
    # A change before the prefix's checkpoint is trusted away by design...
    tamper.execute(engine, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
    assert log.verify(since=prefix).resumed_from == prefix
    with pytest.raises(AuditChainError):  # ...and found by the whole verification.
        log.verify()
    # Rewriting the prefix's own checkpoint row is noticed: the whole chain is read again.
    tamper.execute(
        engine,
        "UPDATE audit_events SET actor = 'alice' WHERE seq = 3",
        f"UPDATE audit_events SET hash = '{'f' * 64}' WHERE seq = {prefix.seq}",
    )
    with pytest.raises(AuditChainError) as info:
        log.verify(since=prefix)
    assert info.value.seq == prefix.seq


def test_an_export_cut_back_to_an_in_chain_checkpoint_is_refused(
    engine: Engine, keyring: Keyring, tmp_path: Path
) -> None:
    log = _log(engine, keyring, tmp_path, interval=5)
    _fill(log, 12)  # in-chain checkpoints at seq 6 (signs 5) and 11 (signs 10)
    exported, lines = _export(log, tmp_path)
    pem = keyring.primary_signing_key().public_pem
    checkpoint = json.loads(lines[11])
    assert checkpoint["action"] == CHECKPOINT_ACTION and checkpoint["details"]["seq"] == 10
    # Its signature is valid, but over a checkpoint's statement, not an export head's.
    for extra in ({}, {"exported_at": checkpoint["ts"]}):
        head = {**checkpoint["details"], **extra}
        forged = canonical_json({"export": "bastion-audit-export/v1", "head": head})
        _write_lines(exported, [forged, *lines[1:11]])  # events 1 to 10
        error = _refused(exported, pem)
        assert error.kind in ("signature", "modified"), str(error)


def test_an_unreadable_event_time_in_the_unsigned_tail_is_reported_not_raised() -> None:
    from bastion.security.audit_chain import ChainReport, unsigned_tail_text

    report = ChainReport(
        events=3,
        head_seq=3,
        head_hash="0" * 64,
        checkpoints=0,
        last_checkpoint_seq=0,
        unsigned_since="yesterday-ish",
    )
    text = unsigned_tail_text(report)
    assert "3 event(s) not yet covered" in text and "unreadable time 'yesterday-ish'" in text
