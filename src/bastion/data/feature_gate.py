"""The privacy gate of a run: raw identifier columns are not features (DESIGN §2).

The registration scan records which columns identify people (e-mails, SSNs, names,
the subject id, ...) and, apart, which it only suspects of it (an entity in part of the
values, a loose fit, free text). Training and evaluation call :func:`check_features`
before they read a row: an identifier or a suspect used as a feature is refused unless
the run's spec lists it in its explicit override, and the caller records every override
in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion.errors import PolicyViolation

__all__ = ["check_features"]


def check_features(
    features: Iterable[str],
    *,
    identifier_columns: Iterable[str],
    suspect_columns: Iterable[str] = (),
    allowed: Iterable[str] = (),
    dataset: str = "the dataset",
) -> list[str]:
    """Refuse identifier and suspect columns among ``features``; return the ones the
    override lets through.

    ``allowed`` must name each identifier or suspect explicitly (there is no wildcard), and
    naming a column that is neither is refused too, so a stale override cannot hide a new
    identifier.
    """
    chosen, identifiers, override = list(features), set(identifier_columns), set(allowed)
    suspects = set(suspect_columns) - identifiers
    stale = sorted(override - identifiers - suspects)
    if stale:
        raise PolicyViolation(
            f"the identifier override names {', '.join(stale)}, which {dataset}'s scan did "
            "not find or suspect to be identifiers; remove them from the override"
        )
    refused = [column for column in chosen if column in identifiers and column not in override]
    doubted = [column for column in chosen if column in suspects and column not in override]
    reasons = []
    if refused:
        reasons.append(f"{', '.join(refused)} in {dataset} identify people")
    if doubted:
        reasons.append(
            f"{', '.join(doubted)} in {dataset} are suspected identifiers (the scan found "
            "people's identifiers in part of their values)"
        )
    if reasons:
        raise PolicyViolation(
            f"{'; '.join(reasons)}; they cannot be features: pseudonymise or drop them "
            "('bastion data pseudonymize'), leave them out of the features, or list them under "
            "the spec's explicit identifier override (audited)"
        )
    return [column for column in chosen if column in override]
