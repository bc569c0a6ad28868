"""Reading raw log files with provenance: every record keeps its file and line number.

Files are read by Python tasks on the executors (one task per file, or per line range of a large
JSON-lines file: see plan_read_chunks), not by Spark's text source, because we need (a) line numbers
for the quarantine, (b) to drop a corrupt gzip file as a whole instead of ingesting the part before
the damage, and (c) to count empty files.
Parsing of the JSON itself stays in Spark (from_json), which is much faster than Python.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import zlib
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.pandas.types import from_arrow_schema

from jobs import raw_contract as rc

# file_status is null on record rows; set only on the per-file rows built from scan_file's verdicts.
# Record rows name their file by file_index, its position in the list of files read (an int per record
# instead of a path: cheaper to move from the Python reader, and with line_number the order that decides
# which duplicate copy comes first); source_file is set only on the per-file rows.
# raw: the record's original text (cut to QUARANTINE_RAW_MAX_CHARS only when oversized);
# record_json: the record as JSON when that differs from raw (CSV, Parquet), else null.
LINES_ARROW_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("file_index", pa.int32()),
        ("line_number", pa.int64()),
        ("raw", pa.string()),
        ("record_json", pa.string()),
        ("reader_reason", pa.string()),
        ("reader_detail", pa.string()),
        ("file_status", pa.string()),
    ]
)
LINES_SCHEMA = from_arrow_schema(LINES_ARROW_SCHEMA)  # the same rows as Spark sees them
FILE_CORRUPT = "corrupt"
FILE_EMPTY = "empty"
FILE_FOREIGN_ENCODING = "foreign_encoding"
_BATCH_ROWS = 32_768


def list_partition_files(spark, partition_path: str) -> list[str] | None:
    """Data files directly under a raw partition (hidden and _-prefixed files skipped); None if it is missing."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(partition_path)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return None
    if not fs.getFileStatus(path).isDirectory():
        raise NotADirectoryError(partition_path)
    names = []
    for status in fs.listStatus(path):
        name = status.getPath().getName()
        if status.isFile() and not name.startswith(("_", ".")):
            names.append(status.getPath().toString())
    return sorted(names)


def _open_binary(path: str):
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        return open(parsed.path if parsed.scheme else path, "rb")
    import pyarrow.fs as pafs

    fs, inner = pafs.FileSystem.from_uri(path)
    return fs.open_input_stream(inner)


@contextmanager
def _open_decompressed(path: str):
    """The file's bytes, gunzipped when the name ends in .gz."""
    with _open_binary(path) as raw_stream:
        yield gzip.GzipFile(fileobj=raw_stream) if path.endswith(".gz") else raw_stream


class _Batcher:
    def __init__(self):
        self.cols = {name: [] for name in LINES_ARROW_SCHEMA.names}

    def add(self, **row):
        for name, values in self.cols.items():
            values.append(row.get(name))
        return len(self.cols["source_file"]) >= _BATCH_ROWS

    def flush(self) -> pa.RecordBatch | None:
        if not self.cols["source_file"]:
            return None
        batch = pa.RecordBatch.from_arrays(
            [pa.array(self.cols[f.name], type=f.type) for f in LINES_ARROW_SCHEMA], schema=LINES_ARROW_SCHEMA
        )
        self.cols = {name: [] for name in LINES_ARROW_SCHEMA.names}
        return batch


def _text_lines(stream) -> Iterator[bytes]:
    for line in stream:
        yield line.rstrip(b"\r\n")


def _records(path: str, fmt: str, max_bytes: int) -> Iterator[dict]:
    """Yield one dict per record of one file (without source_file)."""
    with _open_decompressed(path) as stream:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            line_no = 0
            for batch in pq.ParquetFile(stream).iter_batches(batch_size=_BATCH_ROWS):
                for row in batch.to_pylist():
                    line_no += 1
                    text = json.dumps(row, default=str)
                    yield _record(line_no, text.encode(), text, max_bytes)
            return
        header = None
        for line_no, line in enumerate(_text_lines(stream), start=1):
            if fmt == "csv":
                if header is None:
                    header = next(csv.reader([line.removeprefix(rc.UTF8_BOM).decode("utf-8", errors="replace")]))
                    continue
                text = line.decode("utf-8", errors="replace")
                fields = next(csv.reader([text]), [])
                if len(fields) != len(header):
                    yield dict(line_number=line_no, raw=text[: rc.QUARANTINE_RAW_MAX_CHARS], reader_reason=rc.INVALID_CSV,
                               reader_detail=f"{len(fields)} fields, header has {len(header)}")
                    continue
                yield _record(line_no, line, json.dumps(dict(zip(header, fields))), max_bytes)
            else:
                yield _record(line_no, line, None, max_bytes)


def _record(line_no: int, line: bytes, record_json: str | None, max_bytes: int) -> dict:
    if len(line) > max_bytes:
        return dict(line_number=line_no, raw=line[: rc.QUARANTINE_RAW_MAX_CHARS].decode("utf-8", errors="replace"),
                    reader_reason=rc.OVERSIZED_RECORD,
                    reader_detail=f"record is {len(line)} bytes, limit is {max_bytes}")
    text = line.decode("utf-8", errors="replace")
    return dict(line_number=line_no, raw=text[: rc.QUARANTINE_RAW_MAX_CHARS],
                record_json=text if record_json is None else record_json)


_BLOCK_BYTES = 8 << 20


def _json_line_batches(file_index: int, stream, first_line: int, max_bytes: int, *, pending: bytes = b"",
                       max_lines: int | None = None) -> Iterator[pa.RecordBatch]:
    """JSON lines of one (decompressed) stream as record batches, split in C (bytes.split, Arrow kernels):
    about 10x faster than a Python loop per line. `pending`: bytes already read that start the first line;
    `max_lines`: stop after this many lines (None: read to the end)."""
    line_no = first_line
    carry = b""
    remaining = max_lines
    blocks = itertools.chain([pending] if pending else [], iter(lambda: stream.read(_BLOCK_BYTES), b""))
    for block in blocks:
        parts = (carry + block).split(b"\n")
        carry = parts.pop()
        if remaining is not None and len(parts) >= remaining:
            parts, carry = parts[:remaining], b""  # the rest belongs to the next chunk
        if parts:
            yield _lines_batch(file_index, parts, line_no, max_bytes)
            line_no += len(parts)
            if remaining is not None:
                remaining -= len(parts)
                if remaining == 0:
                    return
    if carry:
        yield _lines_batch(file_index, [carry], line_no, max_bytes)
        line_no += 1
        remaining = None if remaining is None else remaining - 1
    if remaining:  # the file ended before the chunk did
        raise EOFError(f"{line_no} lines, the scan counted at least {first_line + max_lines}: the file changed")


def _without_utf8_bom(stream) -> bytes:
    """The first bytes of a stream, less a UTF-8 byte-order mark."""
    head = stream.read(len(rc.UTF8_BOM))
    return head[len(rc.UTF8_BOM):] if head == rc.UTF8_BOM else head


def _skip_lines(stream, n: int) -> bytes:
    """Consume the first n lines of a stream (newlines counted in C); returns what was read past them."""
    while n:
        block = stream.read(_BLOCK_BYTES)
        if not block:
            raise EOFError(f"the file ended {n} lines before the chunk's first line: the file changed")
        in_block = block.count(b"\n")
        if in_block < n:
            n -= in_block
            continue
        pos = -1
        for _ in range(n):
            pos = block.index(b"\n", pos + 1)
        return block[pos + 1:]
    return b""


def _lines_batch(file_index: int, parts: list[bytes], line_no: int, max_bytes: int) -> pa.RecordBatch:
    n = len(parts)
    binary = pa.array(parts, pa.binary())
    try:
        text = binary.cast(pa.string())
    except pa.ArrowInvalid:  # invalid UTF-8 somewhere in the block: decode line by line, replacing bad bytes
        text = pa.array([p.decode("utf-8", errors="replace") for p in parts], pa.string())
    text = pc.utf8_rtrim(text, characters="\r")
    nbytes = pc.binary_length(binary).cast(pa.int64())
    oversized = pc.greater(nbytes, max_bytes)
    null_str = pa.scalar(None, pa.string())
    if pc.any(oversized).as_py():
        detail = pa.array([f"record is {b} bytes, limit is {max_bytes}" if o else None
                           for b, o in zip(nbytes.to_pylist(), oversized.to_pylist())], pa.string())
        reason = pc.if_else(oversized, pa.scalar(rc.OVERSIZED_RECORD), null_str)
    else:
        detail = reason = pa.nulls(n, pa.string())
    columns = {
        "source_file": pa.nulls(n, pa.string()),
        "file_index": pa.array(np.full(n, file_index, dtype=np.int32)),
        "line_number": pa.array(np.arange(line_no + 1, line_no + n + 1, dtype=np.int64)),
        # JSON lines: the record is parsed from `raw` itself (record_json stays null) so the text is held
        # once; only an oversized line is cut here (it is quarantined, never parsed).
        "raw": pc.if_else(oversized, pc.utf8_slice_codeunits(text, 0, rc.QUARANTINE_RAW_MAX_CHARS), text),
        "record_json": pa.nulls(n, pa.string()),
        "reader_reason": reason,
        "reader_detail": detail,
        "file_status": pa.nulls(n, pa.string()),
    }
    return pa.RecordBatch.from_arrays([columns[f.name] for f in LINES_ARROW_SCHEMA], schema=LINES_ARROW_SCHEMA)


def _read_json_chunk(path: str, file_index: int, first_line: int, max_lines: int | None,
                     max_bytes: int) -> Iterator[pa.RecordBatch]:
    with _open_decompressed(path) as stream:
        pending = _skip_lines(stream, first_line)
        if first_line == 0:  # the file's first bytes: a UTF-8 byte-order mark is not part of the first record
            pending = _without_utf8_bom(stream)
        yield from _json_line_batches(file_index, stream, first_line, max_bytes, pending=pending, max_lines=max_lines)


def read_files_arrow(batches: Iterator[pa.RecordBatch], fmt: str, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: input rows are READ_CHUNKS_SCHEMA chunks of files that scan_file found readable;
    output rows are records. Only JSON lines are read by chunk; other formats come whole (first_line 0,
    max_lines null).

    A file that fails here although the scan read it (it changed in between) fails the task loudly:
    quietly keeping the part read so far would ingest half a file."""
    out = _Batcher()
    for batch in batches:
        for file_index, path, first_line, max_lines in zip(*(batch.column(i).to_pylist() for i in range(4))):
            if fmt == "json":
                pending = out.flush()  # keep file order: earlier rows first
                if pending is not None:
                    yield pending
                yield from _read_json_chunk(path, file_index, first_line, max_lines, max_bytes)
                continue
            for rec in _records(path, fmt, max_bytes):
                if out.add(file_index=file_index, **rec):
                    yield out.flush()
    last = out.flush()
    if last is not None:
        yield last


def scan_file(path: str, fmt: str, max_bytes: int) -> tuple[str, str | None, str | None, int]:
    """(path, status, detail, lines) where status is None for a readable file with records, else FILE_EMPTY,
    FILE_CORRUPT or FILE_FOREIGN_ENCODING (a UTF-16/32 byte-order mark); lines counts the records read (for JSON, the lines). JSON files are only decompressed
    and their newlines counted: far cheaper than reading (and caching) every record just to learn whether
    a file is damaged."""
    n = 0
    try:
        if fmt in ("json", "csv"):
            with _open_decompressed(path) as stream:
                encoding = rc.foreign_encoding(stream.read(4))
            if encoding is not None:
                return (path, FILE_FOREIGN_ENCODING,
                        f"starts with a {encoding} byte-order mark: raw files must be UTF-8 (re-encode it)", 0)
        if fmt == "json":
            with _open_decompressed(path) as stream:
                last = b""
                while block := stream.read(_BLOCK_BYTES):
                    n += block.count(b"\n")
                    last = block
                n += bool(last) and not last.endswith(b"\n")
        else:
            for _ in _records(path, fmt, max_bytes):
                n += 1
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, pa.ArrowInvalid, UnicodeError, csv.Error) as exc:
        return path, FILE_CORRUPT, f"unreadable after {n} lines: {type(exc).__name__}: {exc}"[:1000], n
    return (path, FILE_EMPTY, "file has no records", 0) if n == 0 else (path, None, None, n)


def scan_files(spark, files: list[str], fmt: str, max_bytes: int) -> list[tuple[str, str | None, str | None, int]]:
    """scan_file over every file, one Spark task per file."""
    if not files:
        return []
    return (
        spark.sparkContext.parallelize(files, numSlices=len(files))
        .map(lambda path: scan_file(path, fmt, max_bytes))
        .collect()
    )


READ_CHUNKS_ARROW_SCHEMA = pa.schema(
    [("file_index", pa.int32()), ("path", pa.string()), ("first_line", pa.int64()), ("max_lines", pa.int64())]
)
READ_CHUNKS_SCHEMA = from_arrow_schema(READ_CHUNKS_ARROW_SCHEMA)
MIN_CHUNK_LINES = 100_000  # below this a chunk's extra decompression outweighs the better balance


def plan_read_chunks(files: list[tuple[str, int]], parallelism: int, *, fmt: str = "json",
                     min_chunk_lines: int | None = None) -> list[tuple[int, str, int, int | None]]:
    """Cut JSON-lines files into (file_index, path, first_line, max_lines) chunks, one read task each, so
    that the tasks come in near-equal sizes and fill every core in every wave. Files of other formats
    come whole, one chunk each (a CSV header or a Parquet footer belongs to the whole file).

    A gzip file cannot be split, so a task reading one file alone keeps one core busy while the others
    wait: 5 equal files on 2 cores take 3 waves where 2.5 would do, and every later pass over the records
    inherits those partitions. Each chunk decompresses its file from the start up to its own end (about
    1.5x the decompression for a file cut in two), which is small next to parsing. `files`: (path, lines),
    file_index is the position in this list; max_lines None means "to the end of the file"."""
    if fmt != "json":
        return [(file_index, path, 0, None) for file_index, (path, _) in enumerate(files)]
    min_chunk_lines = MIN_CHUNK_LINES if min_chunk_lines is None else min_chunk_lines
    total = sum(lines for _, lines in files)
    waves = max(1, -(-len(files) // max(1, parallelism)))
    target = max(min_chunk_lines, -(-total // (max(1, parallelism) * waves)))
    chunks = []
    for file_index, (path, lines) in enumerate(files):
        pieces = max(1, -(-lines // target)) if lines >= 2 * min_chunk_lines else 1
        bounds = [lines * k // pieces for k in range(pieces + 1)]
        for k in range(pieces):
            last = k == pieces - 1
            chunks.append((file_index, path, bounds[k], None if last else bounds[k + 1] - bounds[k]))
    return chunks


def read_raw_records(spark, files: list[tuple[str, int]], fmt: str, max_bytes: int):
    """DataFrame of LINES_SCHEMA over the records of `files`, (path, lines) of files scan_files found readable,
    read in balanced chunks (see plan_read_chunks), one Spark task per chunk; a record's file_index is the
    position of its file in `files`."""
    if not files:
        return spark.createDataFrame([], LINES_SCHEMA)
    chunks = plan_read_chunks(files, spark.sparkContext.defaultParallelism, fmt=fmt)
    paths = spark.sparkContext.parallelize(chunks, numSlices=len(chunks))
    return spark.createDataFrame(paths, READ_CHUNKS_SCHEMA).mapInArrow(
        lambda it: read_files_arrow(it, fmt, max_bytes), LINES_SCHEMA
    )
