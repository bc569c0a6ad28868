"""Reading raw JSON-lines files in chunks: every line read once, in order, with its own line number."""

import datetime as dt
import gzip

import pyarrow as pa
import pytest

from jobs import raw_files
from jobs.ingest_events import IngestParams, run
from jobs.raw_files import plan_read_chunks, read_files_arrow, scan_file
from tests.jobs.rawdata import event, write_partition

DAY = dt.date(2026, 1, 5)


def _read(chunks, max_bytes=8192):
    """(file_index, line_number, raw) of every record the mapInArrow body yields for these chunks."""
    batch = pa.RecordBatch.from_pylist(
        [dict(file_index=i, path=p, first_line=f, max_lines=m) for i, p, f, m in chunks],
        schema=raw_files.READ_CHUNKS_ARROW_SCHEMA,
    )
    rows = []
    for out in read_files_arrow(iter([batch]), "json", max_bytes):
        rows += zip(out.column("file_index").to_pylist(), out.column("line_number").to_pylist(),
                    out.column("raw").to_pylist())
    return rows


@pytest.mark.parametrize("block_bytes", [7, 64, 8 << 20])
@pytest.mark.parametrize("trailing_newline", [True, False])
def test_chunks_read_every_line_once_in_order(tmp_path, monkeypatch, block_bytes, trailing_newline):
    # blank lines, CRLF and a line without its newline at the end all keep their place
    lines = [f'{{"n": {i}}}' if i % 7 else "" for i in range(53)]
    lines[10] += "\r"
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    path = tmp_path / "part.json.gz"
    path.write_bytes(gzip.compress(text.encode()))
    monkeypatch.setattr(raw_files, "_BLOCK_BYTES", block_bytes)  # small blocks: chunk ends fall inside blocks

    _, status, _, n_lines = scan_file(str(path), "json", 8192)
    assert (status, n_lines) == (None, 53)
    chunks = plan_read_chunks([(str(path), n_lines)], parallelism=4, min_chunk_lines=5)
    assert len(chunks) == 4 and chunks[-1][3] is None

    expected = [(0, i + 1, line.rstrip("\r")) for i, line in enumerate(lines)]
    assert _read(chunks) == expected
    assert _read([(0, str(path), 0, None)]) == expected


def test_plan_read_chunks_balances_tasks_and_leaves_small_files_whole():
    files = [(f"f{i}", 400_000) for i in range(5)]
    chunks = plan_read_chunks(files, parallelism=2)
    # 5 equal files on 2 cores: 10 equal chunks (5 full waves) instead of 3 waves with one core idle
    assert len(chunks) == 10
    sizes = {}
    for file_index, path, first, max_lines in chunks:
        sizes.setdefault(file_index, []).append((first, max_lines))
    for file_index, parts in sizes.items():
        assert parts == [(0, 200_000), (200_000, None)]

    assert plan_read_chunks([("a", 150_000), ("b", 10)], parallelism=2) == [(0, "a", 0, None), (1, "b", 0, None)]
    # CSV and Parquet files are never cut: a header or a footer belongs to the whole file
    assert plan_read_chunks([("big.csv", 900_000)], parallelism=2, fmt="csv") == [(0, "big.csv", 0, None)]
    hourly = plan_read_chunks([(f"h{i}", 80_000) for i in range(24)], parallelism=2)
    assert [c[2:] for c in hourly] == [(0, None)] * 24


def test_file_shorter_than_its_scan_fails_loudly(tmp_path):
    path = tmp_path / "part.json"
    path.write_text("\n".join(event(f"e{i}") for i in range(10)) + "\n")
    with pytest.raises(EOFError, match="the file changed"):
        _read([(0, str(path), 0, 20)])
    with pytest.raises(EOFError, match="the file changed"):
        _read([(0, str(path), 15, None)])


def test_ingest_by_chunks_keeps_first_copy_and_line_numbers(spark, tmp_path, monkeypatch):
    """Chunk boundaries must not change which copy of a duplicate is kept or where a reject is reported."""
    monkeypatch.setattr(raw_files, "MIN_CHUNK_LINES", 4)
    lines = [event(f"e{i}", user=f"u{i % 3}", ts=f"2026-01-05T10:{i:02d}:00Z") for i in range(30)]
    lines[5] = "not json"
    lines[25] = event("e3", user="u0", ts="2026-01-05T11:00:00Z")  # duplicate of line 4 (event e3), in a later chunk
    raw, warehouse = str(tmp_path / "raw"), str(tmp_path / "warehouse")
    write_partition(raw, DAY, {"part-0.json.gz": "\n".join(lines) + "\n", "part-1.json": "\n".join(lines[:8]) + "\n"})

    report = run(spark, IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse))

    quarantine = {(r["source_file"].rsplit("/", 1)[1], r["line_number"]): (r["reason"], r["detail"])
                  for r in spark.read.format("delta").load(f"{warehouse}/events_quarantine").collect()}
    assert quarantine[("part-0.json.gz", 6)][0] == "invalid_json"
    assert quarantine[("part-0.json.gz", 26)][0] == "duplicate"
    assert quarantine[("part-0.json.gz", 26)][1].endswith("part-0.json.gz:4")
    # part-1 repeats part-0's first 8 lines: all duplicates of part-0 except its own invalid line 6
    assert {k[1]: v[0] for k, v in quarantine.items() if k[0] == "part-1.json"} == {
        **{n: "duplicate" for n in (1, 2, 3, 4, 5, 7, 8)}, 6: "invalid_json"}
    kept = spark.read.format("delta").load(f"{warehouse}/events").filter("event_id = 'e3'").collect()
    assert [(r["source_file"].rsplit("/", 1)[1], r["event_ts"].minute) for r in kept] == [("part-0.json.gz", 3)]
    assert report.accepted == 28 and report.records_read == 38
