-- fxcqrs sagas, MySQL 8.0 or later, MariaDB 10.6 or later (InnoDB).
CREATE TABLE IF NOT EXISTS {{.Sagas}} (
    id             VARCHAR(64)  NOT NULL PRIMARY KEY,
    name           VARCHAR(255) NOT NULL,
    status         VARCHAR(16)  NOT NULL,
    step           INT          NOT NULL,
    context        LONGTEXT     NOT NULL,
    version        BIGINT       NOT NULL,
    error          TEXT         NOT NULL,
    owner          VARCHAR(64)  NOT NULL DEFAULT '',
    lease_until_ns BIGINT       NOT NULL DEFAULT 0,
    updated_at     DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY {{.SagasIndex}} (name, status)
) ENGINE = InnoDB;
CREATE TABLE IF NOT EXISTS {{.Log}} (
    id      BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    saga_id VARCHAR(64) NOT NULL,
    step    INT         NOT NULL,
    action  VARCHAR(16) NOT NULL,
    error   TEXT        NOT NULL,
    at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB;
