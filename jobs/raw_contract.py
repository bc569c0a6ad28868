"""The raw event-log contract: where raw partitions live, their fields, and the quarantine reason codes.

Producers (`attnrec generate`, `attnrec import-movielens`, upstream systems) and the
consumer (`jobs/ingest_events.py`) both read this module.
"""

from __future__ import annotations

import datetime as dt

# Raw partitions: <raw_root>/events/dt=YYYY-MM-DD/  (JSON lines by default, optionally .gz;
# CSV with a header row and Parquet are accepted by ingest_events --format).
RAW_EVENTS_DIR = "events"

# Raw record fields
RAW_USER_ID = "user_id"  # string or integer, required
RAW_ITEM_ID = "item_id"  # string or integer, required
RAW_EVENT_TYPE = "event_type"  # one of EVENT_TYPES (configurable), required
RAW_TIMESTAMP = "timestamp"  # ISO-8601 with offset, or epoch seconds / milliseconds, required
RAW_EVENT_ID = "event_id"  # optional; dedup key when present
RAW_VALUE = "value"  # optional number (e.g. a rating)
RAW_FIELDS = (RAW_EVENT_ID, RAW_USER_ID, RAW_ITEM_ID, RAW_EVENT_TYPE, RAW_TIMESTAMP, RAW_VALUE)

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")

DEFAULT_MAX_RECORD_BYTES = 8 * 1024  # records longer than this are quarantined as oversized_record
QUARANTINE_RAW_MAX_CHARS = 8 * 1024  # events_quarantine.raw is truncated to this

# Quarantine reason codes (events_quarantine.reason). Documented in README.md.
INVALID_JSON = "invalid_json"  # line is not a JSON object (blank lines included)
INVALID_CSV = "invalid_csv"  # --format csv: row has a different number of fields than the header
MISSING_USER_ID = "missing_user_id"  # user_id absent, null or empty/blank
MISSING_ITEM_ID = "missing_item_id"  # item_id absent, null or empty/blank
BAD_TIMESTAMP = "bad_timestamp"  # timestamp absent or unparseable
OUT_OF_WINDOW = "out_of_window"  # timestamp outside the partition's day +- allowed lateness
UNKNOWN_EVENT_TYPE = "unknown_event_type"  # event_type absent or not in the configured list
BAD_VALUE = "bad_value"  # value present but not numeric
OVERSIZED_RECORD = "oversized_record"  # record longer than max_record_bytes
CORRUPT_FILE = "corrupt_file"  # whole file unreadable (e.g. truncated gzip); one row, line_number null
EMPTY_FILE = "empty_file"  # informational: file had no records (counted, not an error)
DUPLICATE = "duplicate"  # same dedup key seen before in this partition; first copy kept
NON_SCALAR_ID = "non_scalar_id"  # user_id or item_id is a JSON object or array (not accepted as its JSON text)
BAD_ID = "bad_id"  # user_id or item_id is a boolean, a non-integral number, or holds control characters
UNSUPPORTED_ENCODING = "unsupported_encoding"  # whole file starts with a UTF-16/UTF-32 byte-order mark; one row
# codes whose quarantine row stands for a whole file, not a record
FILE_REASONS = (CORRUPT_FILE, EMPTY_FILE, UNSUPPORTED_ENCODING)
REASON_CODES = (
    INVALID_JSON,
    INVALID_CSV,
    MISSING_USER_ID,
    MISSING_ITEM_ID,
    BAD_TIMESTAMP,
    OUT_OF_WINDOW,
    UNKNOWN_EVENT_TYPE,
    BAD_VALUE,
    OVERSIZED_RECORD,
    CORRUPT_FILE,
    EMPTY_FILE,
    DUPLICATE,
    NON_SCALAR_ID,
    BAD_ID,
    UNSUPPORTED_ENCODING,
)

# Byte-order marks at the start of a raw file. UTF-8's is dropped (a mark, not data: exporters on Windows write
# it); the others mean a file in another encoding, quarantined whole (decoding it as UTF-8 would turn every
# record into invalid_json). UTF-32 first: its little-endian mark starts with UTF-16's.
UTF8_BOM = b"\xef\xbb\xbf"
OTHER_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32 BE"), (b"\xff\xfe\x00\x00", "UTF-32 LE"),
              (b"\xfe\xff", "UTF-16 BE"), (b"\xff\xfe", "UTF-16 LE"))


def foreign_encoding(head: bytes) -> str | None:
    """The encoding a file's first bytes announce with a byte-order mark, when it is not UTF-8; else None."""
    for mark, name in OTHER_BOMS:
        if head.startswith(mark):
            return name
    return None


def raw_partition_path(raw_root: str, day: dt.date) -> str:
    return f"{raw_root.rstrip('/')}/{RAW_EVENTS_DIR}/dt={day.isoformat()}"
