"""Identifier formats checked by the field's libraries, one value at a time: US SSNs,
national identifiers and VAT numbers by ``python-stdnum``, IP addresses by :mod:`ipaddress`
(phone numbers: :mod:`.phones`).

These run only on candidates (values a vectorised shape prefilter let through), and each
distinct value once.
"""

from __future__ import annotations

import importlib
import ipaddress
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from stdnum.eu import vat
from stdnum.exceptions import InvalidLength, ValidationError
from stdnum.us import ssn

from bastion.data.pii.lexicon import words

__all__ = [
    "NATIONAL_IDS",
    "ip_octets",
    "national_id_ok",
    "national_ids",
    "per_value",
    "ssn_ok",
    "vat_ok",
]

#: stdnum modules of national person identifiers that carry a check digit or a date check
#: and a fixed length (pt.cc and pe.cui are left out: any number passes one in ten).
NATIONAL_IDS = words(
    "at.vnr be.nn bg.egn br.cpf ca.sin ch.ssn cl.rut cn.ric cz.rc de.idnr ec.ci ee.ik "
    "es.dni es.nie fi.hetu fr.nir gb.nhs gr.amka hr.oib ie.pps il.idnr in_.aadhaar "
    "is_.kennitala it.codicefiscale lt.asmens mx.curp nl.bsn no.fodselsnummer "
    "pl.pesel ro.cnp se.personnummer si.emso sk.rc tr.tckimlik za.idnr"
)


#: National-identifier modules are tried on this many values before the rest.
_FIRST = 20


def per_value(candidates: pa.Array, check: Callable[[str], int]) -> np.ndarray:
    """``check`` of each candidate, called once per distinct value."""
    if len(candidates) == 0:
        return np.zeros(0, dtype=np.int16)
    distinct = pc.unique(candidates)
    results = np.fromiter((check(v) for v in distinct.to_pylist()), dtype=np.int16)
    where = pc.index_in(candidates, value_set=distinct).to_numpy(zero_copy_only=False)
    spread: np.ndarray = results[where]
    return spread


def ssn_ok(value: str) -> int:
    """A US SSN that can be issued (area, group and serial in range, not a known fake),
    written with dashes, spaces or none."""
    digits = value.replace(" ", "").replace("-", "")
    return int(digits.isdigit() and len(digits) == 9 and ssn.is_valid(digits))


def vat_ok(value: str) -> int:
    return int(vat.is_valid(value))


def ip_octets(value: str) -> int:
    """-1 for no IP address, 256 for IPv6, else the largest octet of an IPv4 address (a
    column of version strings such as 10.2.3.4 has only small ones)."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return -1
    return 256 if address.version == 6 else max(address.packed)


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"stdnum.{name}")


#: module -> shapes (the value, its digits as 9) it refused on their length alone: a value
#: of such a shape is not tried again (most values of a column share one shape).
_WRONG_SHAPES: dict[str, set[str]] = {}
_REMEMBERED = 4096
_NINES = str.maketrans("0123456789", "9999999999")


def national_id_ok(name: str, value: str) -> bool:
    """``value`` passes the stdnum module ``name``."""
    shape = value.translate(_NINES)
    wrong = _WRONG_SHAPES.setdefault(name, set())
    if shape in wrong:
        return False
    try:
        _module(name).validate(value)
    except InvalidLength as refused:
        if not refused.args:  # the plain length check (cz.rc refuses some lengths by date)
            if len(wrong) >= _REMEMBERED:
                wrong.clear()  # letters make shapes many: keep the memory bounded
            wrong.add(shape)
        return False
    except ValidationError:
        return False
    return True


def national_ids(sample: Sequence[str], *, least: float, cover: float) -> list[str]:
    """The national-identifier modules that at least ``least`` of the sample passes, the
    most passed first (each tried on a few values before all of them); none unless
    together they pass ``cover`` of it (check digits pass one random number in ten)."""
    passing: dict[str, set[int]] = {}
    for name in NATIONAL_IDS:
        first = sample[:_FIRST]
        if sum(national_id_ok(name, v) for v in first) < least / 2 * len(first):
            continue
        passed = {i for i, v in enumerate(sample) if national_id_ok(name, v)}
        if sample and len(passed) >= least * len(sample):
            passing[name] = passed
    covered = set().union(*passing.values()) if passing else set()
    if len(covered) < cover * len(sample):
        return []
    return sorted(passing, key=lambda name: -len(passing[name]))
