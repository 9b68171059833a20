"""Offline verification of an exported audit log, with nothing but the signer's public key.

The export's format is :meth:`bastion.security.audit_log.AuditLog.export_lines`: a signed head,
then every event up to it as canonical JSON lines (docs/security.md §5.3).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bastion.errors import AuditChainError, InvalidInput
from bastion.security.audit_chain import (
    ChainReport,
    EventRow,
    ExportHead,
    TamperKind,
    canonical_json,
    parse_export_header,
    validate_details,
    verify_chain,
)
from bastion.security.audit_signing import checkpoint_verifier

__all__ = ["verify_export"]


def _export_rows(path: Path) -> tuple[ExportHead | None, list[EventRow]]:
    head: ExportHead | None = None
    rows: list[EventRow] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                if number == 1 and (head := parse_export_header(line)) is not None:
                    continue
                obj = json.loads(line)
                details = obj["details"]
                validate_details(details)
                rows.append(
                    EventRow(
                        seq=int(obj["seq"]),
                        ts=str(obj["ts"]),
                        actor=str(obj["actor"]),
                        action=str(obj["action"]),
                        target=str(obj["target"]),
                        details=canonical_json(details).decode(),
                        prev_hash=str(obj["prev_hash"]),
                        hash=str(obj["hash"]),
                    )
                )
            except (ValueError, KeyError, TypeError, InvalidInput):
                raise AuditChainError(
                    f"{path}: line {number} is not a valid audit event", kind="modified", seq=None
                ) from None
    return head, rows


def _uncovered(report: ChainReport) -> str:
    first, last = report.signed_through + 1, report.head_seq
    return f"seq {first}" if first == last else f"seq {first} to {last}"


def verify_export(path: Path, *, public_keys: Sequence[bytes]) -> ChainReport:
    """Verify an exported JSONL log offline with nothing but the signer's public key(s).

    (1) Every link, hash and in-chain checkpoint verifies; (2) the signed head on the
    first line verifies and names the last event's hash, so a rewritten tail fails; (3)
    the log reaches that head, so a cut tail fails; (4) no event lies beyond what a
    signature covers. An export without a signed head is refused: its end cannot be
    proven.
    """
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    head, rows = _export_rows(path)
    by_hash = {row.hash: row.seq for row in rows}
    report = verify_chain(
        rows,
        find_hash=by_hash.get,
        verify_checkpoint=checkpoint_verifier(public_keys),
        anchor=head,
    )
    if head is None:
        uncovered = (
            f"; {_uncovered(report)} are covered by no signature" if report.unsigned_tail else ""
        )
        raise AuditChainError(
            f"{path}: the export has no signed head on its first line, so a cut or rewritten "
            f"tail would not show{uncovered}; export it again with 'bastion audit export' or "
            "GET /api/v1/audit/export",
            kind=TamperKind.TRUNCATED.value,
            seq=report.signed_through + 1 if report.unsigned_tail else None,
        )
    if report.unsigned_tail:
        raise AuditChainError(
            f"{path}: {_uncovered(report)} are covered by no signed checkpoint (the signed "
            f"head is seq {head.seq}); events after it were added to the export",
            kind=TamperKind.INSERTED.value,
            seq=report.signed_through + 1,
        )
    return report
