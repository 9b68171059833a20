"""A column's non-null values as the detectors read them: one Arrow string array.

pandas hands columns over in many layouts (NumPy objects, its own string dtypes, Arrow
arrays in several chunks as a multi-row-group Parquet file gives them, dictionaries,
categories); the detectors want one unchunked ``string`` array. Whole numbers (integers,
or floats that are all integral: an integer column with a gap) become their digits,
marked ``numeric``, since identifiers read back from CSV arrive as numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Text", "column_text", "digit_counts", "letter_counts", "nines", "one_array"]

#: Floats above this are not exact integers, so cannot carry an identifier's digits.
_EXACT = 2**53


@dataclass(frozen=True)
class Text:
    values: pa.Array  # non-null values, type string, one chunk
    numeric: bool  # read from a column of whole numbers


def one_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One ``string`` array from whatever Arrow holds text in (chunked, large, dictionary)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not pa.types.is_string(values.type):
        values = pc.cast(values, pa.string())
    return values


def _whole_numbers(numbers: np.ndarray) -> pa.Array | None:
    if len(numbers) == 0:
        return pa.array([], type=pa.string())
    if numbers.dtype.kind == "f":
        if not (np.isfinite(numbers).all() and (np.abs(numbers) < _EXACT).all()):
            return None
        if not (numbers == np.round(numbers)).all():
            return None
        numbers = numbers.astype(np.int64)
    return one_array(pa.array(numbers))


def _numbers(present: pd.Series, *, integer: bool) -> Text | None:
    try:
        numbers = present.to_numpy(dtype=np.int64 if integer else np.float64)
    except (OverflowError, TypeError, ValueError):
        return None  # beyond 64 bits: not an identifier's digits
    text = _whole_numbers(numbers)
    return None if text is None else Text(text, numeric=True)


def _arrow(present: pd.Series, arrow: pa.DataType) -> Text | None:
    if pa.types.is_dictionary(arrow):
        arrow = arrow.value_type
    if pa.types.is_integer(arrow) or pa.types.is_floating(arrow):
        return _numbers(present, integer=pa.types.is_integer(arrow))
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return Text(one_array(pa.array(present)), numeric=False)
    return None


def _strings(present: pd.Series) -> Text:
    return Text(one_array(pa.array(present.astype(str), type=pa.string())), numeric=False)


def column_text(series: pd.Series) -> Text | None:
    """The column as text, or None for a column no detector reads (fractions, booleans,
    dates, binary)."""
    dtype, present = series.dtype, series.dropna()
    text: Text | None = None
    if isinstance(dtype, pd.CategoricalDtype):
        categories = dtype.categories.dtype
        if pd.api.types.is_object_dtype(categories) or pd.api.types.is_string_dtype(categories):
            text = _strings(present)
    elif isinstance(dtype, pd.ArrowDtype):
        text = _arrow(present, dtype.pyarrow_dtype)
    elif pd.api.types.is_bool_dtype(dtype):
        text = None
    elif pd.api.types.is_integer_dtype(dtype) or pd.api.types.is_float_dtype(dtype):
        text = _numbers(present, integer=pd.api.types.is_integer_dtype(dtype))
    elif pd.api.types.is_object_dtype(dtype):
        text = _strings(present)
    elif pd.api.types.is_string_dtype(dtype):
        text = Text(one_array(pa.array(present)), numeric=False)  # pandas' own, maybe Arrow
    return text


def _count_bytes(values: pa.Array, which: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The UTF-8 bytes of each value that ``which`` picks, counted with numpy."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[
        values.offset : values.offset + len(values) + 1
    ]
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    seen = np.concatenate([[0], np.cumsum(which(data))])
    counts: np.ndarray = seen[offsets[1:] - offsets[0]] - seen[offsets[:-1] - offsets[0]]
    return counts


def _ascii_digits(data: np.ndarray) -> np.ndarray:
    digits: np.ndarray = (data >= ord("0")) & (data <= ord("9"))
    return digits


def digit_counts(values: pa.Array) -> np.ndarray:
    """ASCII digits in each value."""
    return _count_bytes(values, _ascii_digits)


def letter_counts(values: pa.Array) -> np.ndarray:
    """At least the letters of each value: ASCII letters, and every byte of a character
    outside ASCII (all of them 0x80 or above in UTF-8)."""
    return _count_bytes(
        values,
        lambda data: ((data | 0x20) >= ord("a")) & ((data | 0x20) <= ord("z")) | (data >= 0x80),
    )


def nines(values: pa.Array) -> pa.Array:
    """Each value with its ASCII digits written as 9 (MRN-00123456 -> MRN-99999999): the
    bytes rewritten with numpy, the offsets kept."""
    validity, offsets, data = values.buffers()
    if len(values) == 0 or data is None:
        return values
    rewritten = np.frombuffer(data, dtype=np.uint8).copy()
    rewritten[_ascii_digits(rewritten)] = ord("9")
    return pa.Array.from_buffers(
        pa.string(),
        len(values),
        [validity, offsets, pa.py_buffer(rewritten)],
        null_count=values.null_count,
        offset=values.offset,
    )
