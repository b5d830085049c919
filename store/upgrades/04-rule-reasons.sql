-- v3 -> v4: Each list entry keeps the reason it was added with; patterns indexed
-- Until now the reason lived only on the change that added the entry; an
-- import sets one per entry, so the entry carries it.
ALTER TABLE rule ADD COLUMN reason TEXT NOT NULL DEFAULT '';
UPDATE rule SET reason = COALESCE((SELECT reason FROM change WHERE change.version = rule.version), '');
-- The patterns, few among up to millions of entries, counted at each
-- pattern change against rules.MaxPatterns without reading every entry.
CREATE INDEX rule_patterns_idx ON rule (list) WHERE user_id LIKE '%*%' OR user_id LIKE '%?%';
