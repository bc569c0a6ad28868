"""Names of the table columns that cross the Spark <-> PyTorch boundary.

Defined once here; the Spark jobs (`jobs/`) and the model side (`attnmodel/`)
both import these names, so a rename is a one-line change that both sides see.
"""

PADDING_IDX = 0  # item_idx 0 is padding everywhere; real items start at 1

# table names under the warehouse root
EVENTS_TABLE = "events"
EVENTS_QUARANTINE_TABLE = "events_quarantine"
ITEM_INDEX_TABLE = "item_index"
USER_SEQUENCES_TABLE = "user_sequences"
RECOMMENDATIONS_TABLE = "recommendations"
# One row per user_sequences snapshot: what it was built from, so that training and scoring read exactly
# that (the seam record between build_sequences and the model; see SNAPSHOT_COLUMNS).
SEQUENCE_SNAPSHOTS_TABLE = "sequence_snapshots"

# shared column names
USER_ID = "user_id"  # string
ITEM_ID = "item_id"  # string: the item's id in the raw logs
ITEM_IDX = "item_idx"  # int >= 1 in item_index; array<int> (oldest first) in user_sequences
FIRST_SEEN_DATE = "first_seen_date"  # item_index: date the item was first indexed
EVENT_TS = "event_ts"  # timestamp (UTC); array<timestamp> in user_sequences
LENGTH = "length"  # user_sequences: number of items in ITEM_IDX
AS_OF_DATE = "as_of_date"  # user_sequences partition: the logical date of the snapshot

# sequence_snapshots table (AS_OF_DATE is its key)
USER_SEQUENCES_VERSION = "user_sequences_version"  # the Delta version that holds the snapshot
ITEM_INDEX_VERSION = "item_index_version"  # the item_index version its sequences were numbered with
MAX_ITEM_IDX = "max_item_idx"  # largest item_idx of that item_index version: a model's n_items
EVENTS_VERSION = "events_version"  # the events version it was built from
SNAPSHOT_USERS = "users"
# Fingerprint of the snapshot's rows (user_id, item_idx): a rerun that rebuilds the same rows gets the same
# one under a new table version, so the model registry can tell "same data" from "same version".
CONTENT_HASH = "content_hash"
SNAPSHOT_COLUMNS = (AS_OF_DATE, USER_SEQUENCES_VERSION, ITEM_INDEX_VERSION, MAX_ITEM_IDX, EVENTS_VERSION, SNAPSHOT_USERS,
                    CONTENT_HASH)

# recommendations table
RANK = "rank"  # 1-based
SCORE = "score"
MODEL_VERSION = "model_version"
BECAUSE = "because"  # array<string>: original ids of the history items that explain a recommendation
EXCLUDE_IDX = "exclude_idx"  # scoring input: array<int> of items not to recommend to that user (null = none)

# model registry table (one row per event in a model's life; see attnmodel/registry.py)
MODEL_REGISTRY_TABLE = "model_registry"
