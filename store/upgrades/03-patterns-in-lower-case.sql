-- v2 -> v3: Blacklist patterns in lower case: one entry per pattern, whatever its case
-- Patterns are matched folding ASCII letters, so entries that differ only
-- in case are one pattern: keep one of each, in lower case (patterns are
-- ASCII). The change log keeps what was typed.
DELETE FROM rule WHERE list = 'blacklist' AND (user_id LIKE '%*%' OR user_id LIKE '%?%') AND EXISTS (
    SELECT 1 FROM rule AS other
    WHERE other.list = 'blacklist' AND lower(other.user_id) = lower(rule.user_id) AND other.user_id < rule.user_id
);
UPDATE rule SET user_id = lower(user_id) WHERE list = 'blacklist' AND (user_id LIKE '%*%' OR user_id LIKE '%?%');
