-- fxcqrs outbox, MySQL 8.0 or later, MariaDB 10.6 or later (InnoDB).
CREATE TABLE IF NOT EXISTS {{.Outbox}} (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic      VARCHAR(255) NOT NULL,
    message_id VARCHAR(64)  NOT NULL,
    payload    LONGBLOB     NOT NULL,
    metadata   TEXT         NOT NULL,
    created_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY {{.OutboxIndex}} (topic, id)
) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS {{.DeadLetters}} (
    id         BIGINT       NOT NULL PRIMARY KEY,
    topic      VARCHAR(255) NOT NULL,
    message_id VARCHAR(64)  NOT NULL,
    payload    LONGBLOB     NOT NULL,
    metadata   TEXT         NOT NULL,
    error      TEXT         NOT NULL,
    failed_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS {{.Leases}} (
    topic    VARCHAR(255) NOT NULL PRIMARY KEY,
    owner    VARCHAR(64)  NOT NULL,
    until_ns BIGINT       NOT NULL
) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS {{.Inbox}} (
    handler    VARCHAR(512) NOT NULL,
    message_id VARCHAR(64)  NOT NULL,
    handled_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (handler, message_id)
) ENGINE = InnoDB;
