"""Checksums of card numbers (Luhn) and IBANs (ISO 7064 mod-97), vectorised with numpy over
Arrow strings: the per-value definitions (``stdnum.luhn``, ``stdnum.iban``) give the same
answers, a hundred times slower, as tests/data/test_pii.py checks.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["iban_ok", "luhn_ok"]


def _characters(text: pa.Array, width: int, *, right: bool) -> np.ndarray:
    """ASCII strings of at most ``width`` characters as one (width, n) array of their codes,
    padded with "0" on the left (``right``-aligned) or on the right: a row per position."""
    pad = pc.utf8_lpad if right else pc.utf8_rpad
    padded = pad(text, width=width, padding="0").cast(pa.large_binary())
    start = int(np.frombuffer(padded.buffers()[1], dtype=np.int64)[padded.offset])
    data = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[start : start + width * len(text)]
    return np.ascontiguousarray(data.reshape(len(text), width).T).astype(np.int32)


def luhn_ok(candidates: pa.Array) -> np.ndarray:
    """Luhn validity of digit strings (separators removed), vectorised with numpy."""
    digits = pc.fill_null(pc.replace_substring_regex(candidates, r"[ -]", ""), "")
    lengths = pc.utf8_length(digits).to_numpy(zero_copy_only=False)
    fits = (lengths >= 12) & (lengths <= 19) & pc.ascii_is_decimal(digits).to_numpy(False)
    result = np.zeros(len(lengths), dtype=bool)
    if not fits.any():
        return result
    # Right-aligned, so row 0 is the last digit; leading zeros leave the sum as it is.
    from_right = _characters(digits.filter(pa.array(fits)), 19, right=True)[::-1] - ord("0")
    doubled = from_right[1::2] * 2
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    total = from_right[0::2].sum(axis=0) + doubled.sum(axis=0)
    result[fits] = total % 10 == 0
    return result


#: 10^k mod 97 for every k an IBAN's digits can reach (34 characters, two digits a letter).
_POWERS_MOD_97 = np.array([pow(10, k, 97) for k in range(69)], dtype=np.int32)


def iban_ok(candidates: pa.Array) -> np.ndarray:
    """ISO 7064 mod-97: with the first four characters moved to the end and letters made
    numbers (A = 10 ... Z = 35), the number leaves a remainder of 1 when divided by 97.
    Vectorised with numpy: each character adds its value times 10^(digits after it) mod 97."""
    text = pc.fill_null(pc.replace_substring(candidates, " ", ""), "")
    lengths = pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int32)
    fits = (lengths >= 15) & (lengths <= 34) & pc.string_is_ascii(text).to_numpy(False)
    result = np.zeros(len(lengths), dtype=bool)
    if not fits.any():
        return result
    chars = _characters(text.filter(pa.array(fits)), 34, right=False)
    position = np.arange(34)[:, None]
    inside = position < lengths[fits][None, :]
    digit = (chars >= ord("0")) & (chars <= ord("9"))
    upper = (chars >= ord("A")) & (chars <= ord("Z"))
    lower = (chars >= ord("a")) & (chars <= ord("z"))
    readable = (digit | upper | lower | ~inside).all(axis=0)
    number = np.where(digit, chars - ord("0"), np.where(upper, chars - 55, chars - 87))
    width = (2 - digit.astype(np.int16)) * inside  # the digits each character becomes
    after = width.sum(axis=0, dtype=np.int16) - np.cumsum(width, axis=0, dtype=np.int16)
    head, body = width[:4].sum(axis=0, dtype=np.int16), width[4:].sum(axis=0, dtype=np.int16)
    # Moved, the first four come last: the rest have them after too, they lose the rest.
    after = np.where(position >= 4, after + head, after - body)
    remainder = (number * _POWERS_MOD_97[after] * inside).sum(axis=0) % 97
    result[fits] = (remainder == 1) & readable
    return result
