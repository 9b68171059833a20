"""Source tables read batch by batch into their canonical form, in bounded memory.

A CSV is read twice as text by pyarrow's streaming reader. The first pass settles each
column's type over the whole file (the streaming reader alone would fix it from the first
block, then fail or change values when a later block disagrees); the second converts each
batch to that type and writes it to Parquet. Types are those pandas gives the whole file:
integers, floats, booleans (``true``/``false`` in any case) and text, pandas' missing-value
markers read as missing, and an integer column with a gap held as floats. A Parquet source
is copied batch by batch.

Every byte read is hashed as it is read: both passes over a CSV must read the same bytes,
and a Parquet file must hash the same before and after it is read, so a file that changes
while it is read is refused. The caller compares the SHA-256 with the one submitted.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from bastion.errors import IntegrityError, InvalidInput
from bastion.files import atomic_output, sha256_file

__all__ = [
    "ROW_GROUP_ROWS",
    "SourceRead",
    "changed_while_read",
    "csv_batches",
    "open_parquet",
    "write_csv",
    "write_parquet",
]

#: Bytes of CSV parsed at a time (the reader's buffers hold tens of blocks' worth, so a
#: larger block costs memory, not time); rows held before they are written as a row group.
BLOCK_BYTES = 1 << 20
ROW_GROUP_ROWS = 131_072
#: What pandas reads as a missing value by default (``pandas.read_csv``'s ``na_values``).
NULL_VALUES = [
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]
_INTEGER = r"^\s*[+-]?[0-9]+\s*$"
_FLOAT = r"^\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:inf|infinity))\s*$"
#: Spellings of a boolean column (built on first use: an Arrow allocation at import time
#: makes its allocator reserve address space before the job's other libraries are loaded).
_BOOLEAN_WORDS = ("true", "false")


@dataclass(frozen=True)
class SourceRead:
    """What reading a source file saw: its bytes (count and SHA-256) and its rows."""

    size: int
    sha256: str
    rows: int


class _Kind(enum.IntEnum):
    """A CSV column's type so far; a later batch can only widen it."""

    EMPTY = 0  # no value yet
    BOOLEAN = 1
    INTEGER = 2
    FLOAT = 3
    TEXT = 4


class _Hashing(io.RawIOBase):
    """A file read through: the SHA-256 and count of the bytes read so far."""

    def __init__(self, raw: io.RawIOBase) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._raw.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
            self.size += count
        return count or 0

    def finish(self) -> str:
        """Read what the parser left (nothing, normally); the SHA-256 of all that was read."""
        while self.read(1 << 20):
            pass
        return self.digest.hexdigest()


def _all(mask: pa.Array) -> bool:
    return bool(pc.all(mask).as_py())


def _any(values: pa.Array, text: str) -> bool:
    return bool(pc.any(pc.match_substring(values, text, ignore_case=True)).as_py())


def _casts(values: pa.Array, kind: pa.DataType) -> bool:
    try:
        pc.cast(values, kind)
    except (pa.ArrowInvalid, OverflowError):
        return False
    return True


def _numeric_text(values: pa.Array) -> pa.Array:
    """Text as pandas reads a number: surrounding blanks and a leading ``+`` ignored."""
    return pc.replace_substring_regex(pc.utf8_trim_whitespace(values), r"^\+", "")


def _integers(present: pa.Array) -> bool | None:
    """Whether every value is an integer pandas reads as one; None when they all look like
    integers but one is past 64 bits (kept as written, never rounded to a float)."""
    # pyarrow's own parser, where it agrees with pandas: it also takes hexadecimal (0x1A),
    # which pandas reads as text, and refuses the blanks and "+" pandas takes.
    if _casts(present, pa.int64()) and not _any(present, "x"):
        return True
    if not _all(pc.match_substring_regex(present, _INTEGER)):
        return False
    return True if _casts(_numeric_text(present), pa.int64()) else None


def _floats(present: pa.Array) -> bool:
    """Whether every value is a number pandas reads as a float."""
    # pyarrow's parser also takes "nan(1)", "+nan" and "NAN", which pandas reads as text.
    if _casts(present, pa.float64()) and not _any(present, "nan"):
        return True
    return _all(pc.match_substring_regex(present, _FLOAT))


def _widen(values: pa.Array, kind: _Kind) -> _Kind:
    """The narrowest kind that holds this batch's values and the earlier ones' (``kind``)."""
    present = values.drop_null()
    if kind is _Kind.TEXT or len(present) == 0:
        return kind
    if kind <= _Kind.BOOLEAN and _all(
        pc.is_in(pc.utf8_lower(present), value_set=pa.array(_BOOLEAN_WORDS))
    ):
        return _Kind.BOOLEAN
    if kind in (_Kind.EMPTY, _Kind.INTEGER):
        integers = _integers(present)
        if integers is None:
            return _Kind.TEXT
        if integers:
            return _Kind.INTEGER
    if kind is not _Kind.BOOLEAN and _floats(present):
        return _Kind.FLOAT
    return _Kind.TEXT


def _arrow_type(kind: _Kind, *, gaps: bool) -> pa.DataType:
    if kind is _Kind.BOOLEAN:
        return pa.bool_()
    if kind is _Kind.INTEGER and not gaps:
        return pa.int64()
    if kind is _Kind.TEXT:
        return pa.large_string()
    return pa.float64()  # floats, integers with a gap, and a column with no value at all


def _convert(values: pa.Array, kind: pa.DataType) -> pa.Array:
    if pa.types.is_large_string(kind):
        return values
    if pa.types.is_boolean(kind):
        return pc.equal(pc.utf8_lower(values), "true")
    if values.null_count == len(values):
        return pa.nulls(len(values), kind)
    try:
        return pc.cast(values, kind)  # what the first pass found to be numbers
    except pa.ArrowInvalid:
        return pc.cast(_numeric_text(values), kind)  # written with blanks or a "+"


def _header(path: Path) -> list[str]:
    """The column names as written, refused when one repeats (pandas would rename the
    second ``a`` to ``a.1``)."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as file:
        try:
            header = next(csv.reader(file), None)
        except csv.Error as exc:
            raise InvalidInput(f"{path}: line 1: not valid CSV ({exc})") from None
    if not header:
        raise InvalidInput(f"{path}: no header line; a CSV starts with its column names")
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        raise InvalidInput(f"{path}: column names repeat: {', '.join(repeated[:5])}")
    return header


def _column_names(header: list[str]) -> list[str]:
    """A nameless column named as pandas names it."""
    return [name or f"Unnamed: {index}" for index, name in enumerate(header)]


def _check_shape(path: Path) -> None:
    """Name the line of a row shorter or longer than the header (pandas would pad a short
    row with missing values), reading the file with Python's csv module."""
    with path.open(newline="", encoding="utf-8", errors="replace") as file:
        rows = csv.reader(file)
        try:
            header = next(rows, None)
            for row in rows:
                if header is not None and row and len(row) != len(header):
                    raise InvalidInput(
                        f"{path}: line {rows.line_num} has {len(row)} fields, the header "
                        f"{len(header)}; fix the row (missing values are written as empty fields)"
                    )
        except csv.Error as exc:
            raise InvalidInput(f"{path}: line {rows.line_num}: not valid CSV ({exc})") from None


def _text_batches(path: Path, header: list[str], source: _Hashing) -> Iterator[pa.RecordBatch]:
    """The CSV's rows as text, a block at a time; a malformed row refused with its line."""
    try:
        reader = pa_csv.open_csv(
            source,
            read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES, use_threads=True),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.large_string() for name in header},
                null_values=NULL_VALUES,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        _check_shape(path)
        raise InvalidInput(f"{path}: cannot read it as csv ({exc})") from None
    if reader.schema.names != header:
        raise InvalidInput(f"{path}: its header line cannot be read consistently; check its quotes")
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            _check_shape(path)  # names the line when the row's length is what is wrong
            raise InvalidInput(f"{path}: cannot read it as csv ({exc})") from None
        yield batch


def _settle_types(path: Path, header: list[str]) -> tuple[pa.Schema, SourceRead]:
    """First pass: each column's type over the whole file."""
    kinds = [_Kind.EMPTY] * len(header)
    gaps = [False] * len(header)
    rows = 0
    with path.open("rb", buffering=0) as raw:
        source = _Hashing(raw)
        for batch in _text_batches(path, header, source):
            rows += batch.num_rows
            for index, values in enumerate(batch.columns):
                kinds[index] = _widen(values, kinds[index])
                gaps[index] = gaps[index] or values.null_count > 0
        digest = source.finish()
    if rows == 0:
        raise InvalidInput(f"{path}: holds no rows")
    fields = [
        pa.field(name, _arrow_type(kind, gaps=gap))
        for name, kind, gap in zip(_column_names(header), kinds, gaps, strict=True)
    ]
    return pa.schema(fields), SourceRead(size=source.size, sha256=digest, rows=rows)


def csv_batches(path: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch], SourceRead]:
    """The CSV's schema, its rows as batches of that schema, and what the first pass read.

    The batches come from a second pass; when it is exhausted it has checked that it read
    the same bytes as the first (:class:`IntegrityError` if not).
    """
    header = _header(path)
    schema, first = _settle_types(path, header)

    def batches() -> Iterator[pa.RecordBatch]:
        with path.open("rb", buffering=0) as raw:
            source = _Hashing(raw)
            try:
                for batch in _text_batches(path, header, source):
                    columns = [
                        _convert(values, field.type)
                        for values, field in zip(batch.columns, schema, strict=True)
                    ]
                    yield pa.RecordBatch.from_arrays(columns, schema=schema)
            except (pa.ArrowInvalid, InvalidInput):
                if source.finish() != first.sha256:
                    raise changed_while_read(path) from None
                raise
            if source.finish() != first.sha256:
                raise changed_while_read(path)

    return schema, batches(), first


def changed_while_read(path: Path) -> IntegrityError:
    return IntegrityError(
        f"{path}: changed while it was read; register it again once nothing writes to it"
    )


def _write(out: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> None:
    """Write the batches as Parquet, in row groups of about :data:`ROW_GROUP_ROWS` rows."""
    # Dictionary encoding only where the source holds categories: tried on every column,
    # it doubles the time to write a table of mostly distinct values and saves nothing.
    categories = [field.name for field in schema if pa.types.is_dictionary(field.type)]
    with (
        atomic_output(out, mode=0o600) as handle,
        pq.ParquetWriter(handle, schema, use_dictionary=categories) as writer,
    ):
        held: list[pa.RecordBatch] = []
        for batch in batches:
            held.append(batch)
            if sum(b.num_rows for b in held) >= ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_batches(held, schema=schema))
                held = []
        if held:
            writer.write_table(pa.Table.from_batches(held, schema=schema))


def write_csv(source: Path, out: Path) -> SourceRead:
    """Write a CSV as canonical Parquet at ``out``, a block at a time."""
    schema, batches, read = csv_batches(source)
    _write(out, schema, batches)
    return read


def _without_index(schema: pa.Schema) -> tuple[pa.Schema, list[str]]:
    """The columns pandas would read as the table (not as its index), and their schema."""
    raw = (schema.metadata or {}).get(b"pandas")
    if raw is None:
        return schema, schema.names
    pandas_meta = json.loads(raw)
    index = {name for name in pandas_meta.get("index_columns", []) if isinstance(name, str)}
    kept = [name for name in schema.names if name not in index]
    # Column names are text, as registration always made them; no index is stored.
    pandas_meta["index_columns"], pandas_meta["column_indexes"] = [], []
    pandas_meta["columns"] = [
        {**column, "name": column["field_name"]}
        for column in pandas_meta.get("columns", [])
        if column.get("field_name") in kept
    ]
    fields = [schema.field(name) for name in kept]
    metadata = {**(schema.metadata or {}), b"pandas": json.dumps(pandas_meta).encode()}
    return pa.schema(fields, metadata=metadata), kept


def open_parquet(path: Path) -> pq.ParquetFile:
    """A Parquet file to read a batch at a time in bounded memory: without pre-buffering,
    which keeps the bytes of every row group read (the whole file by the last batch), and
    through a 1 MiB buffer rather than a whole column chunk at a time."""
    return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)


def write_parquet(source: Path, out: Path) -> SourceRead:
    """Copy a Parquet table to ``out`` a row group at a time, without a stored index."""
    before = sha256_file(source)
    try:
        parquet = open_parquet(source)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidInput(f"{source}: cannot read it as parquet ({exc})") from None
    with parquet:
        names = parquet.schema_arrow.names
        if len(set(names)) != len(names):
            raise InvalidInput(f"{source}: column names repeat")
        schema, columns = _without_index(parquet.schema_arrow)
        rows = parquet.metadata.num_rows
        if rows == 0:
            raise InvalidInput(f"{source}: holds no rows")
        batches = (
            pa.RecordBatch.from_arrays(batch.columns, schema=schema)
            for batch in parquet.iter_batches(batch_size=ROW_GROUP_ROWS, columns=columns)
        )
        try:
            _write(out, schema, batches)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput(f"{source}: cannot read it as parquet ({exc})") from None
    if sha256_file(source) != before:
        raise changed_while_read(source)
    return SourceRead(size=source.stat().st_size, sha256=before, rows=rows)
