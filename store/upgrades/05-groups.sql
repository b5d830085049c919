-- v4 -> v5: Groups and the users known to match their patterns
-- A group's members are the rows of its list, 'group:<name>'; the group
-- itself is its row with an empty user_id. 'known' lists the local users
-- seen syncing who match a group's pattern. SQLite cannot change a CHECK
-- constraint, so the table is rebuilt there.
-- only: sqlite until "end only"
CREATE TABLE rule_v5 (
    list    TEXT   NOT NULL CHECK (list IN ('always_send', 'blacklist', 'known') OR list LIKE 'group:%'),
    user_id TEXT   NOT NULL,
    version BIGINT NOT NULL,
    reason  TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (list, user_id)
) WITHOUT ROWID;
INSERT INTO rule_v5 (list, user_id, version, reason) SELECT list, user_id, version, reason FROM rule;
DROP TABLE rule;
ALTER TABLE rule_v5 RENAME TO rule;
CREATE INDEX rule_patterns_idx ON rule (list) WHERE user_id LIKE '%*%' OR user_id LIKE '%?%';
-- end only sqlite
-- only: postgres until "end only"
ALTER TABLE rule DROP CONSTRAINT rule_list_check;
ALTER TABLE rule ADD CONSTRAINT rule_list_check CHECK (list IN ('always_send', 'blacklist', 'known') OR list LIKE 'group:%');
-- end only postgres
