-- Each saga's tenant (fxbus.TenantOf of the call that began it; '' for
-- the default tenant, and for every saga stored before). An awaited event
-- resumes only the sagas of its own tenant: the waiting lookup's index
-- gains the tenant, after the columns it had, so that it still serves a
-- lookup without it. A business key is a tenant's: two tenants may each
-- have an unfinished saga of key 7. VARBINARY: a tenant is compared byte
-- for byte, as fxbus.StaticTenants does; it is at most 128 bytes
-- (fxbus.MaxTenantIDLength), which the runner checks before it stores one.
ALTER TABLE {{.Sagas}}
    ADD COLUMN tenant VARBINARY(128) NOT NULL DEFAULT '',
    ADD KEY {{.TenantWaitingIndex}} (awaiting, correlation, tenant),
    DROP KEY {{.WaitingIndex}},
    ADD UNIQUE KEY {{.TenantActiveKeyIndex}} (name, tenant, active_key),
    DROP KEY {{.ActiveKeyIndex}};
