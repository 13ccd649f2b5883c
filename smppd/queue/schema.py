"""The SQLite schema as a list of forward migrations, and the step that applies them.

The database's `PRAGMA user_version` is the number of migrations applied; `migrate` runs the
missing ones, each in its own transaction with its version bump, so a crash mid-way leaves a
consistent older version. Only smppd.queue.sqlite* use this; nothing outside queue/ writes SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from smppd.queue.errors import SchemaTooNewError

# Segment ids are message_id << 8 | index, so a message's segments are one primary-key range and
# need no index of their own. Carrier, priority and client are copied onto segments so that the
# claim index (carrier, priority, client, id) covers a claim without touching messages. Partial
# indexes hold only the rows a query needs: due segments for claims, scheduled ones by time,
# unfinished messages by destination (opt-out cancels), finished ones by time (retention).
_V1: Final = (
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        client TEXT NOT NULL,
        ref TEXT,
        source TEXT NOT NULL,
        destination TEXT NOT NULL,
        carrier TEXT NOT NULL,
        priority INTEGER NOT NULL,
        registered_delivery INTEGER NOT NULL,
        total INTEGER NOT NULL,
        created_at REAL NOT NULL,
        not_before REAL,
        expires_at REAL,
        finished_at REAL
    )
    """,
    "CREATE UNIQUE INDEX messages_by_ref ON messages (client, ref) WHERE ref IS NOT NULL",
    """
    CREATE INDEX messages_unfinished_by_destination ON messages (destination)
    WHERE finished_at IS NULL
    """,
    "CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL",
    """
    CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        carrier TEXT NOT NULL,
        priority INTEGER NOT NULL,
        client TEXT NOT NULL,
        total INTEGER NOT NULL,
        registered_delivery INTEGER NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL,
        body BLOB NOT NULL,
        command_status INTEGER,
        carrier_message_id TEXT,
        correlation_keys TEXT,
        bind TEXT,
        receipt_stat TEXT,
        receipt_err TEXT,
        done_at REAL,
        updated_at REAL NOT NULL
    )
    """,
    """
    CREATE INDEX segments_queued ON segments (carrier, priority, client, id)
    WHERE state = 'queued'
    """,
    """
    CREATE INDEX segments_scheduled ON segments (carrier, next_attempt_at)
    WHERE state = 'scheduled'
    """,
    # A carrier's open message ids -> the segment (retired once the segment is final).
    """
    CREATE TABLE correlations (
        carrier TEXT NOT NULL,
        key TEXT NOT NULL,
        segment_id INTEGER NOT NULL,
        PRIMARY KEY (carrier, key)
    ) WITHOUT ROWID
    """,
    # Correlations of final segments, so that a repeated final receipt is recognised as such.
    # Open correlations are looked up first: a new submission reusing an id wins.
    """
    CREATE TABLE retired_correlations (
        carrier TEXT NOT NULL,
        key TEXT NOT NULL,
        segment_id INTEGER NOT NULL,
        PRIMARY KEY (carrier, key)
    ) WITHOUT ROWID
    """,
    # Receipts that matched no open correlation: held (for a Submitted still to come), then
    # 'expired' (held past the limit) or 'dropped' (pushed out by the bound); kept until purge.
    """
    CREATE TABLE pending_receipts (
        id INTEGER PRIMARY KEY,
        carrier TEXT NOT NULL,
        keys TEXT NOT NULL,
        stat TEXT NOT NULL,
        final_state TEXT,
        err TEXT NOT NULL,
        done_at REAL,
        received_at REAL NOT NULL,
        state TEXT NOT NULL
    )
    """,
    "CREATE INDEX pending_receipts_held ON pending_receipts (received_at) WHERE state = 'held'",
    """
    CREATE TABLE pending_keys (
        carrier TEXT NOT NULL,
        key TEXT NOT NULL,
        receipt_id INTEGER NOT NULL,
        PRIMARY KEY (carrier, key, receipt_id)
    ) WITHOUT ROWID
    """,
    # Segment counts kept in the same transactions as the rows, so stats never scan the backlog.
    """
    CREATE TABLE segment_counts (
        carrier TEXT NOT NULL,
        priority INTEGER NOT NULL,
        client TEXT NOT NULL,
        state TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (carrier, priority, client, state)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE inbound (
        id INTEGER PRIMARY KEY,
        carrier TEXT NOT NULL,
        source TEXT NOT NULL,
        destination TEXT NOT NULL,
        text TEXT NOT NULL,
        data_coding INTEGER NOT NULL,
        received_at REAL NOT NULL,
        client TEXT
    )
    """,
    # High-water marks of ids, saved before a purge so that ids are never reused.
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    """
    CREATE TABLE optouts (
        sender TEXT NOT NULL,
        number TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (sender, number)
    ) WITHOUT ROWID
    """,
)

# One table of correlations: a final segment's ids stay where they are (until purge) instead of
# moving to retired_correlations, which cost a delete and an insert per key on every final
# receipt. A new submission that reuses an id still takes it over (INSERT OR REPLACE); lookups
# skip segments that are final. Where both tables had a key, the open one is the newer. The
# earliest version 1 files had no retired_correlations (it joined version 1 after its release).
_V2: Final = (
    """
    CREATE TABLE IF NOT EXISTS retired_correlations (
        carrier TEXT NOT NULL,
        key TEXT NOT NULL,
        segment_id INTEGER NOT NULL,
        PRIMARY KEY (carrier, key)
    ) WITHOUT ROWID
    """,
    """
    INSERT OR IGNORE INTO correlations (carrier, key, segment_id)
    SELECT carrier, key, segment_id FROM retired_correlations
    """,
    "DROP TABLE retired_correlations",
)

# Opt-out cancels look messages up by destination. The index held only unfinished messages, so
# every message that finished deleted an entry at a random place in it: with a large backlog,
# one more random page written per message in every commit. A full index changes only when a
# message is stored or purged; the lookup filters on finished_at itself.
_V3: Final = (
    "DROP INDEX messages_unfinished_by_destination",
    "CREATE INDEX messages_by_destination ON messages (destination)",
)

# Messages still open, oldest first, for the sweep that stops waiting for receipts that never
# come. Entries are added at the right edge as messages are stored and mostly leave from the left
# as they finish in about the order they were sent, so a commit touches few of its pages.
_V4: Final = ("CREATE INDEX messages_open ON messages (created_at) WHERE finished_at IS NULL",)

# Bodies in a table of their own. A segment's row is rewritten whole on every change (claim,
# response, receipt), and its body was half of it: written again each time, and twice the pages
# in every commit's WAL frames. The body is written once, read once by the claim, and deleted by
# the purge with its segment.
_V5: Final = (
    "CREATE TABLE segment_bodies (id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
    "INSERT INTO segment_bodies (id, body) SELECT id, body FROM segments",
    "ALTER TABLE segments DROP COLUMN body",
)

# Scheduled urgent segments by time, for a send loop that starts over stored work (a restart):
# their due times arm its urgent claimer, which a scan of the whole scheduled backlog would
# delay. Priority 6 is URGENT_PRIORITY (smppd.queue.model); a test checks that the query uses it.
_V6: Final = (
    """
    CREATE INDEX segments_scheduled_urgent ON segments (carrier, next_attempt_at)
    WHERE state = 'scheduled' AND priority >= 6
    """,
)

# A held receipt remembers whether it stands for its whole message (carrier receipts_per).
_V7: Final = ("ALTER TABLE pending_receipts ADD COLUMN whole_message INTEGER NOT NULL DEFAULT 0",)

# Parts of long MO messages, held from their deliver_sm_resp until the message is stored: in
# memory only, a restart lost the parts already acknowledged to the SMSC.
_V8: Final = (
    """
    CREATE TABLE inbound_parts (
        carrier TEXT NOT NULL,
        source TEXT NOT NULL,
        destination TEXT NOT NULL,
        data_coding INTEGER NOT NULL,
        ref INTEGER NOT NULL,
        total INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (carrier, source, destination, data_coding, ref, total, seq)
    ) WITHOUT ROWID
    """,
)

# Segments waiting out a retry (a temporary error, no answer), oldest message first: the age
# of the oldest work not yet submitted must count them, and the segments_scheduled index would
# make that a scan of everything scheduled for later.
_V9: Final = (
    """
    CREATE INDEX segments_retrying ON segments (carrier, id)
    WHERE state = 'scheduled' AND attempts > 0
    """,
)

# Open messages with a validity, by when they expire: the sweep that expires waiting segments
# while their carrier is down (a claim expires them too, but only with a bind up) reads them
# in order from where its last pass stopped, without walking everything open.
_V10: Final = (
    """
    CREATE INDEX messages_expiring ON messages (expires_at, id)
    WHERE expires_at IS NOT NULL AND finished_at IS NULL
    """,
)

# The national language tables a held MO part's UDH names (PartGroup.locking_shift/single_shift).
_V11: Final = (
    "ALTER TABLE inbound_parts ADD COLUMN locking_shift INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE inbound_parts ADD COLUMN single_shift INTEGER NOT NULL DEFAULT 0",
)

# What the daemon learned of a carrier's message ids on `message_id_format: auto` (smppd.idformat):
# in memory only, every start matched the receipts before it decided again wrongly.
_V12: Final = (
    """
    CREATE TABLE id_formats (
        carrier TEXT PRIMARY KEY,
        receipt_format TEXT NOT NULL,
        learned_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
)

# Whether an inbound message came whole and what opt-out word it was read as, so that a client
# can read what it missed while not subscribed as its events said it. Rows stored before this
# read as complete with no keyword.
_V13: Final = (
    "ALTER TABLE inbound ADD COLUMN complete INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE inbound ADD COLUMN keyword TEXT",
)

# Receipt queries (carriers[].receipt_queries): when each submitted segment still awaiting its
# receipt is next to be asked about with query_sm. Rows only for carriers that query, so the
# others pay nothing; rows of segments settled meanwhile go when they come due.
_V14: Final = (
    """
    CREATE TABLE receipt_queries (
        segment_id INTEGER PRIMARY KEY,
        carrier TEXT NOT NULL,
        due_at REAL NOT NULL
    )
    """,
    "CREATE INDEX receipt_queries_due ON receipt_queries (carrier, due_at)",
)

# Long-number sender ids are kept as `+` and digits (smppd.address.canonical_sender), the form
# MO to them arrives in: opt-outs recorded under the bare digits move there, so that they go on
# stopping submits; so do the senders of messages still to be sent (their sender's rate).
_V15: Final = (
    """
    INSERT OR IGNORE INTO optouts (sender, number, created_at)
    SELECT '+' || sender, number, created_at FROM optouts
    WHERE length(sender) BETWEEN 9 AND 15 AND sender NOT GLOB '*[^0-9]*'
    """,
    "DELETE FROM optouts WHERE length(sender) BETWEEN 9 AND 15 AND sender NOT GLOB '*[^0-9]*'",
    """
    UPDATE messages SET source = '+' || source
    WHERE finished_at IS NULL AND length(source) BETWEEN 9 AND 15 AND source NOT GLOB '*[^0-9]*'
    """,
)

# The fingerprints of MO PDUs stored for carriers with inbound_dedup_s (smppd.redelivery), written
# with what they carried: in memory only, an MO the SMSC delivered again after a restart (our
# deliver_sm_resp lost to the crash) was stored twice. Rows go once past `until`.
_V16: Final = (
    """
    CREATE TABLE inbound_seen (
        carrier TEXT NOT NULL,
        key BLOB NOT NULL,
        seen_at REAL NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (carrier, key)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX inbound_seen_until ON inbound_seen (until)",
)

# A client's inbound page read every later MO of every client, with nothing to bound the scan
# (50-70 ms a page beside a million of another client's): by client, then id.
_V17: Final = ("CREATE INDEX inbound_by_client ON inbound (client, id)",)

MIGRATIONS: Final[Sequence[Sequence[str]]] = (
    _V1,
    _V2,
    _V3,
    _V4,
    _V5,
    _V6,
    _V7,
    _V8,
    _V9,
    _V10,
    _V11,
    _V12,
    _V13,
    _V14,
    _V15,
    _V16,
    _V17,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> int:
    """Bring `db` (autocommit mode) to SCHEMA_VERSION; returns the version it started from."""
    (found,) = db.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"database schema version {found} is newer than this smppd's {SCHEMA_VERSION}"
        )
    for version in range(found, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            # PRAGMA takes no parameters; the value is our own integer.
            db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            db.rollback()
            raise
        db.execute("COMMIT")
    return int(found)
