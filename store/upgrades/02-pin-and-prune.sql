-- v1 -> v2: Pinned control room; done inbox rows keep no event or reply
-- Small facts the service keeps: the pinned control room, and how far back
-- the inbox has been pruned.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

UPDATE inbox SET event_json = '', reply_json = NULL WHERE state = 'done';
