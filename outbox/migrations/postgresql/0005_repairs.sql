-- The repair tools: a dead letter can be discarded with its reason kept,
-- and every repairing action is recorded with who asked and why.
ALTER TABLE {{.DeadLetters}} ADD COLUMN discarded_ns BIGINT NOT NULL DEFAULT 0;
ALTER TABLE {{.DeadLetters}} ADD COLUMN discard_reason TEXT NOT NULL DEFAULT '';
CREATE TABLE {{.Repairs}} (
    id     BIGSERIAL PRIMARY KEY,
    at_ns  BIGINT NOT NULL,
    action TEXT   NOT NULL,
    target TEXT   NOT NULL,
    who    TEXT   NOT NULL,
    why    TEXT   NOT NULL
);
