-- v0 -> v1: Rule lists, change log (audit) and the command inbox
CREATE TABLE rule (
    list       TEXT    NOT NULL CHECK (list IN ('always_send', 'blacklist')),
    user_id    TEXT    NOT NULL,
    version    INTEGER NOT NULL, -- the change that added it
    PRIMARY KEY (list, user_id)
) WITHOUT ROWID;

-- One row per committed change; its version is the routing API's version.
-- AUTOINCREMENT: a version is never reused, so it never goes back.
CREATE TABLE change (
    version    INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT,             -- the command event, NULL for imports
    sender     TEXT    NOT NULL, -- who commanded it
    command    TEXT    NOT NULL, -- the command text, for the audit log
    reason     TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL, -- unix milliseconds
    push_to    TEXT    NOT NULL DEFAULT '[]' -- JSON list: users who gained presence
);

CREATE TABLE change_entry (
    version INTEGER NOT NULL REFERENCES change (version),
    list    TEXT    NOT NULL,
    user_id TEXT    NOT NULL,
    action  TEXT    NOT NULL CHECK (action IN ('add', 'remove')),
    PRIMARY KEY (version, list, user_id)
) WITHOUT ROWID;

-- Events from appservice transactions, stored before the transaction is
-- acknowledged. event_id is unique, so a retried transaction or a redelivered
-- event is stored once; state moves pending -> applied (the change and the
-- reply are committed) -> done (the reply was sent).
CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL UNIQUE,
    room_id     TEXT    NOT NULL,
    sender      TEXT    NOT NULL,
    event_json  TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'applied', 'done')),
    reply_json  TEXT
);
CREATE INDEX inbox_state_idx ON inbox (state, seq);
