-- Each saga's tenant (fxbus.TenantOf of the call that began it; '' for
-- the default tenant, and for every saga stored before). An awaited event
-- resumes only the sagas of its own tenant: the waiting lookup's index
-- gains the tenant, after the columns it had, so that it still serves a
-- lookup without it. A business key is a tenant's: two tenants may each
-- have an unfinished saga of key 7.
ALTER TABLE {{.Sagas}} ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX {{.TenantWaitingIndex}} ON {{.Sagas}} (awaiting, correlation, tenant) WHERE status = 'WAITING';
DROP INDEX {{.WaitingIndex}};
CREATE UNIQUE INDEX {{.TenantActiveKeyIndex}} ON {{.Sagas}} (name, tenant, active_key);
DROP INDEX {{.ActiveKeyIndex}};
