package fxsaga_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/fxcqrs/fxcqrs/internal/sqlschema"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tenants records, by order id, which tenant each act and compensation
// ran under ("act reserve@acme").
type tenants struct {
	mu   sync.Mutex
	seen map[int][]string
}

func newTenants() *tenants { return &tenants{seen: map[int][]string{}} }

func (ts *tenants) record(ctx context.Context, o *Order, what string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.seen[o.ID] = append(ts.seen[o.ID], what+"@"+fxbus.TenantOf(ctx))
}

func (ts *tenants) of(id int) []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.seen[id])
}

// tenantStep records the tenant it acts and compensates under; it fails
// its act for the orders fail names, and cancels the run's context for
// those crash names (the process stops under it: the saga is left as a
// crash leaves it, for recovery). It writes its idempotency key in the
// unit of work's transaction when there is one.
type tenantStep struct {
	name  string
	ts    *tenants
	fail  func(id int) bool
	crash map[int]context.CancelFunc
}

func (s tenantStep) Name() string { return s.name }

func (s tenantStep) Act(ctx context.Context, o *Order) error {
	if stop, ok := s.crash[o.ID]; ok {
		stop()
		return errors.New("the process stops")
	}
	if err := writeEffect(ctx); err != nil {
		return err
	}
	s.ts.record(ctx, o, "act "+s.name)
	if s.fail != nil && s.fail(o.ID) {
		return errors.New(s.name + " refused")
	}
	return nil
}

func (s tenantStep) Compensate(ctx context.Context, o *Order) error {
	if err := writeEffect(ctx); err != nil {
		return err
	}
	s.ts.record(ctx, o, "undo "+s.name)
	return nil
}

// writeEffect records the step's idempotency key in the effects table of
// the unit of work's store, if it has one.
func writeEffect(ctx context.Context) error {
	tx := fxoutbox.Tx(ctx)
	if tx == nil {
		return nil
	}
	_, err := tx.ExecContext(ctx, "INSERT INTO effects (saga_key) VALUES ('"+fxsaga.IdempotencyKey(ctx)+"')")
	return err
}

// tenantSaga reserves, waits for the order's Paid, then ships.
func tenantSaga(ts *tenants, failShip func(int) bool) *fxsaga.Saga[Order] {
	return fxsaga.Define[Order]("paid order",
		tenantStep{name: "reserve", ts: ts},
		fxsaga.Await(fxsaga.Wait[Order, Paid]{
			Key:    orderKey,
			Match:  func(p Paid) string { return p.OrderID },
			Within: 30 * time.Minute,
			Then: func(ctx context.Context, o *Order, _ Paid) error {
				ts.record(ctx, o, "paid")
				return nil
			},
		}),
		tenantStep{name: "ship", ts: ts, fail: failShip},
	).KeyBy(orderKey)
}

// A saga keeps the tenant of the call that began it; an awaited event
// resumes only its own tenant's saga, though another tenant's gives the
// same key; its deadline, found by recovery from a context of no tenant,
// compensates under the saga's tenant. Two tenants each hold business
// key 7.
func TestTenantResumesOnlyItsOwnSagas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	r, m, store := waitRig(t, c)
	ts := newTenants()
	s := tenantSaga(ts, nil)

	wait := func(tenant string, id int) fxsaga.State {
		_, err := fxsaga.Run(fxbus.WithTenant(ctx, tenant), r, s, Order{ID: id})
		var pending *fxsaga.Pending
		require.ErrorAs(t, err, &pending, tenant)
		st, err := store.Load(ctx, pending.SagaID)
		require.NoError(t, err)
		assert.Equal(t, tenant, st.Tenant, "kept with the saga")
		return st
	}
	acme := wait("acme", 7)
	globex := wait("globex", 7) // the key is acme's and globex's each
	_, err := fxsaga.Run(fxbus.WithTenant(ctx, "acme"), r, s, Order{ID: 7})
	var started *fxsaga.AlreadyStarted
	require.ErrorAs(t, err, &started, "but once per tenant")
	assert.Equal(t, acme.ID, started.SagaID)

	require.NoError(t, fxcqrs.Publish(fxbus.WithTenant(ctx, "initech"), m, Paid{OrderID: "7"}))
	require.NoError(t, fxcqrs.Publish(ctx, m, Paid{OrderID: "7"}))
	assert.Equal(t, int64(2), r.Unmatched(), "another tenant's event, and the default tenant's, resume neither")
	for _, st := range []fxsaga.State{acme, globex} {
		now, err := store.Load(ctx, st.ID)
		require.NoError(t, err)
		assert.Equal(t, fxsaga.Waiting, now.Status)
	}

	require.NoError(t, fxcqrs.Publish(fxbus.WithTenant(ctx, "globex"), m, Paid{OrderID: "7"}))
	now, err := store.Load(ctx, globex.ID)
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Completed, now.Status)
	now, err = store.Load(ctx, acme.ID)
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Waiting, now.Status, "globex's payment is not acme's")

	c.Advance(time.Hour)
	require.NoError(t, fxsaga.Recover(ctx, r, s), "recovery's context has no tenant")
	now, err = store.Load(ctx, acme.ID)
	require.NoError(t, err)
	assert.Equal(t, fxsaga.Compensated, now.Status)
	assert.Equal(t, []string{
		"act reserve@acme", "act reserve@globex", "paid@globex", "act ship@globex", "undo reserve@acme",
	}, ts.of(7))
}

// A tenant id longer than fxbus.MaxTenantIDLength starts no saga: no
// store could tell it from its first 128 bytes.
func TestTenantTooLongStartsNoSaga(t *testing.T) {
	t.Parallel()
	store := fxsaga.NewMemory()
	r := newRunner(t, store)
	ctx := fxbus.WithTenant(context.Background(), strings.Repeat("t", fxbus.MaxTenantIDLength+1))
	_, err := fxsaga.Run(ctx, r, orderSaga(newWorld()), Order{ID: 1})
	require.ErrorContains(t, err, "more than fxbus.MaxTenantIDLength")
	unfinished, err := store.Unfinished(context.Background(), "order")
	require.NoError(t, err)
	assert.Empty(t, unfinished)
}

// On each database: the tenant is stored with the saga; an event of one
// tenant does not resume another's saga of the same key; a saga left
// running by a crash is recovered, by another replica whose context has
// no tenant, with every act and compensation under the saga's tenant; a
// waiting saga's deadline, found overdue by recovery, compensates under
// its tenant too.
func TestTenantOnEachDatabase(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		effectsTable(t, d)
		ctx := context.Background()
		c := newClock()
		rig := newSQLWait(t, d, c, false)
		ts := newTenants()
		s := tenantSaga(ts, nil)

		wait := func(tenant string, id int) fxsaga.State {
			_, err := fxsaga.Run(fxbus.WithTenant(ctx, tenant), rig.r, s, Order{ID: id})
			var pending *fxsaga.Pending
			require.ErrorAs(t, err, &pending, tenant)
			st, err := rig.store.Load(ctx, pending.SagaID)
			require.NoError(t, err)
			assert.Equal(t, tenant, st.Tenant, "stored with the saga")
			return st
		}
		acme, globex := wait("acme", 1), wait("globex", 1)
		_, err := fxsaga.Run(fxbus.WithTenant(ctx, "acme"), rig.r, s, Order{ID: 1})
		var started *fxsaga.AlreadyStarted
		require.ErrorAs(t, err, &started, "a business key is once per tenant")
		assert.Equal(t, acme.ID, started.SagaID)

		evil := fxbus.WithTenant(inbound(ctx, rig.bus, "m-evil"), "initech")
		require.NoError(t, fxcqrs.Publish(evil, rig.m, Paid{OrderID: "1"}))
		assert.Equal(t, int64(1), rig.r.Unmatched(), "initech's event gives acme's key and resumes nothing")
		found, err := rig.store.Correlated(ctx, "initech", "fxsaga_test.Paid", "1")
		require.NoError(t, err)
		assert.Empty(t, found)
		found, err = rig.store.Correlated(ctx, "acme", "fxsaga_test.Paid", "1")
		require.NoError(t, err)
		require.Len(t, found, 1)
		assert.Equal(t, acme.ID, found[0].ID)
		for _, near := range []string{"ACME", "acme "} {
			found, err = rig.store.Correlated(ctx, near, "fxsaga_test.Paid", "1")
			require.NoError(t, err)
			assert.Empty(t, found, "a tenant is compared byte for byte: %q is not acme", near)
		}

		require.NoError(t, fxcqrs.Publish(fxbus.WithTenant(inbound(ctx, rig.bus, "m-globex"), "globex"), rig.m, Paid{OrderID: "1"}))
		st, err := rig.store.Load(ctx, globex.ID)
		require.NoError(t, err)
		assert.Equal(t, fxsaga.Completed, st.Status)
		st, err = rig.store.Load(ctx, acme.ID)
		require.NoError(t, err)
		assert.Equal(t, fxsaga.Waiting, st.Status, "globex's payment is not acme's")

		// A crash in acme's saga of order 2, at its second step.
		stop, cancel := context.WithCancel(fxbus.WithTenant(ctx, "acme"))
		defer cancel()
		crashing := fxsaga.Define[Order]("crashy", tenantStep{name: "reserve", ts: ts},
			tenantStep{name: "ship", ts: ts, crash: map[int]context.CancelFunc{2: cancel}}, tenantStep{name: "pack", ts: ts})
		_, err = fxsaga.Run(stop, rig.r, crashing, Order{ID: 2})
		require.ErrorIs(t, err, context.Canceled)
		// Another replica, its clock past the first's lease, recovers it
		// from a context of no tenant: ship and pack act, pack fails, the
		// compensations run, each under acme.
		other, otherStore, _ := newSQLRunner(t, d, setup{config: fxsaga.RunnerConfig{CompensationBackoff: time.Millisecond}})
		fxsaga.SetClock(otherStore, func() time.Time { return time.Now().Add(time.Hour) })
		recovered := fxsaga.Define[Order]("crashy", tenantStep{name: "reserve", ts: ts},
			tenantStep{name: "ship", ts: ts}, tenantStep{name: "pack", ts: ts, fail: func(int) bool { return true }})
		require.NoError(t, fxsaga.Recover(ctx, other, recovered))
		assert.Equal(t, []string{
			"act reserve@acme", "act ship@acme", "act pack@acme", "undo ship@acme", "undo reserve@acme",
		}, ts.of(2))
		crashed, _, err := otherStore.Page(ctx, fxsaga.Filter{Name: "crashy"})
		require.NoError(t, err)
		require.Len(t, crashed, 1)
		assert.Equal(t, fxsaga.Compensated, crashed[0].Status)
		assert.Equal(t, "acme", crashed[0].Tenant)

		// acme's wait for order 1 runs out; recovery, from a context of no
		// tenant, finds it overdue and compensates it under acme.
		c.Advance(time.Hour)
		require.NoError(t, fxsaga.Recover(ctx, rig.r, s))
		st, err = rig.store.Load(ctx, acme.ID)
		require.NoError(t, err)
		assert.Equal(t, fxsaga.Compensated, st.Status)
		assert.Equal(t, []string{
			"act reserve@acme", "act reserve@globex", "paid@globex", "act ship@globex", "undo reserve@acme",
		}, ts.of(1))
	})
}

// stores is a Tenancy of tenant stores, each an SQLite database with an
// outbox of its own, as fxoutbox's tenant stores will be: InTenant runs fn
// in a transaction on the tenant's database; broken's fails.
//
// With only set it is an fxsaga.StoresOnly, as the outbox with tenant
// stores is, and a tenant set gone has no store served, as one that left
// the outbox's source: Tenants leaves it out, InTenant and the unit of
// work refuse it with fxbus.ErrUnknownTenant.
type stores struct {
	list   []string
	by     map[string]*fxoutbox.Outbox
	dbs    map[string]database
	broken string
	only   bool

	mu    sync.Mutex
	calls []string        // the tenants InTenant was asked for, in order
	gone  map[string]bool // the tenants with no store served now
}

func (s *stores) Tenants() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(s.list), func(t string) bool { return s.gone[t] })
}

func (s *stores) HasTenantStores() bool { return s.only }

// setGone says whether tenant has no store served now.
func (s *stores) setGone(tenant string, gone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone == nil {
		s.gone = map[string]bool{}
	}
	s.gone[tenant] = gone
}

// served is tenant's store's outbox, while it is served.
func (s *stores) served(tenant string) (*fxoutbox.Outbox, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.by[tenant]
	return o, ok && !s.gone[tenant]
}

func (s *stores) InTenant(ctx context.Context, tenant string, fn func(ctx context.Context) error) error {
	s.mu.Lock()
	s.calls = append(s.calls, tenant)
	s.mu.Unlock()
	if tenant == s.broken {
		return errors.New("its database is down")
	}
	o, ok := s.served(tenant)
	if !ok {
		return fxbus.ErrUnknownTenant
	}
	return o.InTenant(ctx, "", func(ctx context.Context) error { return fn(fxbus.WithTenant(ctx, tenant)) })
}

// unitOfWork is the unit of work of each call's tenant's store.
func (s *stores) unitOfWork() fxcqrs.Middleware {
	return fxcqrs.MiddlewareFunc(func(ctx context.Context, call fxcqrs.Call, next fxcqrs.Next) (any, error) {
		o, ok := s.served(fxbus.TenantOf(ctx))
		if !ok {
			return nil, fxbus.ErrUnknownTenant
		}
		return o.Middleware().Handle(ctx, call, next)
	})
}

func (s *stores) asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// With tenant stores (a Tenancy), each tenant's saga is created and
// driven in its own tenant's database, beside its effects; recovery walks
// each tenant's store in a transaction of the tenant's, drives each saga
// under its tenant, and goes on past a tenant whose store fails, which
// its error names.
func TestRecoveryWalksEachTenantsStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ts := &stores{list: []string{"", "acme", "globex", "gone"}, by: map[string]*fxoutbox.Outbox{}, dbs: map[string]database{}, broken: "gone"}
	bus, err := fxbus.New(fxbus.Config{}, nil, nil)
	require.NoError(t, err)
	for _, tenant := range []string{"", "acme", "globex"} {
		d := openDatabase(t, fxoutbox.SQLite)
		effectsTable(t, d)
		o, err := fxoutbox.New(d.DB, bus, fxoutbox.Config{Dialect: d.Dialect}, nil)
		require.NoError(t, err)
		ts.by[tenant], ts.dbs[tenant] = o, d
	}
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithCommandHandlers(fxsaga.StepHandler{}), fxcqrs.WithMiddleware(ts.unitOfWork()))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	replica := func(now func() time.Time) (*fxsaga.Runner, *fxsaga.SQL) {
		store, err := fxsaga.NewSQL(ts.dbs[""].DB, fxoutbox.SQLite, fxsaga.Tables{}, 0)
		require.NoError(t, err)
		fxsaga.SetClock(store, now)
		return fxsaga.NewRunner(m, store, fxsaga.RunnerConfig{Tenancy: ts}, nil), store
	}
	orders := map[string]int{"": 10, "acme": 11, "globex": 12}
	crash := map[int]context.CancelFunc{}
	rec := newTenants()
	s := fxsaga.Define[Order]("walked", tenantStep{name: "reserve", ts: rec},
		tenantStep{name: "ship", ts: rec, crash: crash}, tenantStep{name: "pack", ts: rec})
	first, _ := replica(time.Now)
	for tenant, id := range orders {
		run, stop := context.WithCancel(fxbus.WithTenant(ctx, tenant))
		defer stop()
		crash[id] = stop
		_, err := fxsaga.Run(run, first, s, Order{ID: id})
		require.ErrorIs(t, err, context.Canceled, tenant)
	}
	clear(crash)
	for tenant, d := range ts.dbs {
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_sagas WHERE status = 'RUNNING' AND tenant = '"+tenant+"'"),
			"%q's saga lives in its own store, and no other saga does", tenant)
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_sagas"), tenant)
	}
	assert.Equal(t, []string{"acme", "globex"}, sortedCopy(ts.asked()), "each created in a transaction of its tenant's store")

	second, store := replica(func() time.Time { return time.Now().Add(time.Hour) }) // past the first's lease
	err = fxsaga.Recover(ctx, second, s)
	require.ErrorContains(t, err, `recovery in tenant "gone"'s store: its database is down`)
	for tenant, id := range orders {
		assert.Equal(t, []string{"act reserve@" + tenant, "act ship@" + tenant, "act pack@" + tenant}, rec.of(id), tenant)
		d := ts.dbs[tenant]
		assert.Equal(t, 1, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_sagas WHERE status = 'COMPLETED'"), tenant)
		assert.Equal(t, 3, count(t, d.DB, "SELECT COUNT(*) FROM effects"), "%q's effects, in its own store", tenant)
	}
	assert.Equal(t, uint64(3), second.Stats().Recovered)
	walked := ts.asked()[2:]
	assert.Equal(t, []string{"acme", "acme", "globex", "globex", "gone"}, walked,
		"the claims and the overdue scan of each tenant with a store of its own, in its transaction; the default tenant's on the pool")

	// The repair tools work in a tenant's store through the same
	// transaction.
	require.NoError(t, ts.InTenant(ctx, "acme", func(ctx context.Context) error {
		page, total, err := store.Page(ctx, fxsaga.Filter{Name: "walked"})
		if err == nil && (total != 1 || page[0].Tenant != "acme") {
			err = errors.New("not acme's saga")
		}
		return err
	}))
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// On each database: a saga stored before migration 0007 is the default
// tenant's after it: the default tenant's event resumes it, another's
// does not, and its business key is the default tenant's alone.
func TestSagasStoredBeforeTenantsAreTheDefaultTenants(t *testing.T) {
	t.Parallel()
	outboxtest.ForEachEmpty(t, func(t *testing.T, d outboxtest.Database) {
		ctx := context.Background()
		ms, err := fxsaga.Migrations(d.Dialect, fxsaga.Tables{})
		require.NoError(t, err)
		require.Equal(t, "tenant", ms[6].Name, "0007 is the tenant's")
		before := sqlschema.Set{Module: "fxsaga", Versions: "fxcqrs_saga_migrations", Flavor: map[fxoutbox.Dialect]sqlschema.Flavor{
			fxoutbox.PostgreSQL: sqlschema.PostgreSQL, fxoutbox.MySQL: sqlschema.MySQL, fxoutbox.SQLite: sqlschema.SQLite,
		}[d.Dialect]}
		for _, m := range ms[:6] {
			before.Migrations = append(before.Migrations, sqlschema.Migration(m))
		}
		require.NoError(t, before.Migrate(ctx, d.DB))
		_, err = d.DB.ExecContext(ctx, `INSERT INTO fxcqrs_sagas (id, name, status, step, context, version, error, awaiting, correlation, deadline_ns, business_key, active_key)
			VALUES ('old', 'paid order', 'WAITING', 1, '{"ID":5}', 2, '', 'fxsaga_test.Paid', '5', 1, '5', '5')`)
		require.NoError(t, err)

		require.NoError(t, fxsaga.Migrate(ctx, d.DB, d.Dialect, fxsaga.Tables{}))
		store, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
		require.NoError(t, err)
		found, err := store.Correlated(ctx, "", "fxsaga_test.Paid", "5")
		require.NoError(t, err)
		require.Len(t, found, 1)
		assert.Equal(t, "old", found[0].ID)
		assert.Empty(t, found[0].Tenant)
		found, err = store.Correlated(ctx, "acme", "fxsaga_test.Paid", "5")
		require.NoError(t, err)
		assert.Empty(t, found)

		key := fxsaga.State{Name: "paid order", Status: fxsaga.Running, Context: []byte(`{"ID":5}`), Version: 1, BusinessKey: "5"}
		acme, same := key, key
		acme.ID, acme.Tenant = "acme's", "acme"
		same.ID = "default's"
		require.NoError(t, store.Create(ctx, acme), "acme's key 5 is not the default tenant's")
		var started *fxsaga.AlreadyStarted
		require.ErrorAs(t, store.Create(ctx, same), &started)
		assert.Equal(t, "old", started.SagaID)
	})
}
