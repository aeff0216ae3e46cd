-- The repair tools: a dead letter can be discarded with its reason kept,
-- and every repairing action is recorded with who asked and why.
ALTER TABLE {{.DeadLetters}}
    ADD COLUMN discarded_ns   BIGINT        NOT NULL DEFAULT 0,
    ADD COLUMN discard_reason VARCHAR(1024) NOT NULL DEFAULT '';
CREATE TABLE {{.Repairs}} (
    id     BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at_ns  BIGINT       NOT NULL,
    action VARCHAR(32)  NOT NULL,
    target TEXT         NOT NULL,
    who    VARCHAR(255) NOT NULL,
    why    TEXT         NOT NULL
) ENGINE = InnoDB;
