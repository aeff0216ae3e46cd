-- The version of each saga's stored context (fxsaga's Saga.Version), so
-- that a definition whose context type changed upcasts a context stored
-- by older code before it reads it. The sagas stored before are version 1.
ALTER TABLE {{.Sagas}}
    ADD COLUMN context_version INT NOT NULL DEFAULT 1,
    ADD KEY {{.ContextVersionIndex}} (name, context_version);
