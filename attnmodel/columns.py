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

# shared column names
USER_ID = "user_id"  # string
ITEM_ID = "item_id"  # string: the item's id in the raw logs
ITEM_IDX = "item_idx"  # int >= 1 in item_index; array<int> (oldest first) in user_sequences
FIRST_SEEN_DATE = "first_seen_date"  # item_index: date the item was first indexed
EVENT_TS = "event_ts"  # timestamp (UTC); array<timestamp> in user_sequences
LENGTH = "length"  # user_sequences: number of items in ITEM_IDX
AS_OF_DATE = "as_of_date"  # user_sequences partition: the logical date of the snapshot

# recommendations table
RANK = "rank"  # 1-based
SCORE = "score"
MODEL_VERSION = "model_version"
