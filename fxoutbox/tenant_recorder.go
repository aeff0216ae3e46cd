package fxoutbox

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"go.uber.org/zap"
)

// The bus's dead letters and parked keys with a store per tenant: a
// consumed message of tenant X that is dead-lettered or parked is
// recorded in X's store, beside X's data, where Outbox.AdminOf(X) and the
// command line's -tenant find it. It is built from the database and the
// tenant source alone, as the bus's recorder must be (the outbox needs
// the bus): it keeps an Admin per store of its own, made on first use.
//
// A key is parked per tenant (fxbus.ParkedKey): tenant X's parked key k
// holds back X's later messages of k, never tenant Y's, whose data and
// repairs are apart. The bus knows its parked keys by tenant, and asks
// about a message only its own tenant's store.
//
// The recorder does not know which stores the outbox serves: it reads
// those the source lists, and those that left it that it knows to hold
// parked keys, each within RelayConfig.StoreTimeout. A listed store
// without the table of parked letters (not migrated yet, or its schema
// dropped) holds none, and is passed over. A listed store that cannot be
// read otherwise, or does not answer in time, is logged and returned as
// its tenant's unread mark (fxbus.ParkedKey with an empty Key): it may
// hold keys parked by another replica, and a key missed would lose its
// order, so the bus asks Admit about each of its tenant's keyed messages
// (which fails, and redelivers the message, while the store cannot be
// read) until the store answers; failing ParkedKeys instead would fail
// the bus's start, or redeliver the lane's messages, of every tenant.
// The default store that cannot be read fails ParkedKeys: every tenant's
// messages without a store of their own are its. A store that left and
// cannot be read is logged and passed over: it is served no more.

// tenantRecorder is the fxbus.DeadLetterRecorder and fxbus.Parking of an
// outbox with tenant stores.
type tenantRecorder struct {
	def *Admin       // the default store's: the outbox's own database
	src TenantStores // trusted: the application's
	db  *sql.DB      // the outbox's, for the stores in a schema of it
	cfg Config
	log *zap.Logger
	now func() time.Time // the outbox's clock, for the age of admits

	// storeTimeout bounds each store's read of its parked keys
	// (RelayConfig.StoreTimeout): one store that hangs does not hang the
	// bus's start. Not positive: no bound.
	storeTimeout time.Duration

	mu        sync.Mutex
	admins    map[string]*Admin     // by store id; kept after the store leaves the source while it holds parked keys
	parks     map[string]bool       // the stores ("": the default) this process knows to hold parked keys
	admits    map[admitted]released // released messages between Admit and Arrived or Repark
	maxAdmits int                   // how many admits are kept at most
	swept     time.Time             // when admits were last rid of the old
}

// Released messages whose Arrived or Repark never comes (handled
// elsewhere after a redelivery: the lane moved to another replica, say)
// are forgotten after admitTTL, and beyond maxAdmits the oldest are.
// Forgotten, a message's Arrived and Repark go to every store, where only
// a parked letter of its id matches.
const (
	admitTTL  = time.Hour
	maxAdmits = 10_000
)

// admitted names a released message of a topic's key.
type admitted struct{ topic, key, id string }

// released is where an admitted message's Arrived or Repark goes: a, the
// store that admitted it.
type released struct {
	a  *Admin
	at time.Time // when admitted
}

// newDeadLetterRecorder is the bus's recorder and parking: the default
// store's Admin without tenant stores, else one that routes by tenant.
func newDeadLetterRecorder(db *sql.DB, cfg Config, src TenantStores, log *zap.Logger) (fxbus.DeadLetterRecorder, error) {
	def, err := NewAdmin(db, cfg.Dialect, cfg.Tables, cfg.Now)
	if err != nil {
		return nil, err
	}
	def = def.WithLanes(cfg.Relay)
	if cfg.TenantStores != nil {
		src = cfg.TenantStores
	}
	if src == nil {
		return def, nil
	}
	if log == nil {
		log = zap.NewNop()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &tenantRecorder{
		def: def, src: src, db: db, cfg: cfg, log: log, now: now,
		admins: map[string]*Admin{}, parks: map[string]bool{}, admits: map[admitted]released{},
		maxAdmits:    maxAdmits,
		storeTimeout: relay.WithDefaults(cfg.Relay).StoreTimeout,
	}, nil
}

var (
	_ fxbus.DeadLetterRecorder = (*tenantRecorder)(nil)
	_ fxbus.Parking            = (*tenantRecorder)(nil)
)

// RecordDeadLetter records msg in its tenant's store; a message
// dead-lettered because its tenant is unknown, in the default store.
func (r *tenantRecorder) RecordDeadLetter(ctx context.Context, topic string, msg *message.Message, reason error) error {
	_, a, err := r.storeOf(ctx, msg, reason)
	if err != nil {
		return err
	}
	return a.RecordDeadLetter(ctx, topic, msg, reason)
}

// RecordParked records msg in its tenant's store, where it parks its key.
func (r *tenantRecorder) RecordParked(ctx context.Context, topic, key string, msg *message.Message, reason error) error {
	id, a, err := r.storeOf(ctx, msg, reason)
	if err != nil {
		return err
	}
	if err := a.RecordParked(ctx, topic, key, msg, reason); err != nil {
		return err
	}
	r.parked(id)
	return nil
}

// ParkedKeys returns topic's keys parked in any store, by tenant: the
// default one, every store the source lists, and those that left it that
// hold parked keys (see the top of this file for the stores it passes
// over). A store the source lists that cannot be read, or does not answer
// within storeTimeout, is logged and is its tenant's unread mark,
// fxbus.ParkedKey{Tenant: id}: a key missed would lose its order. The
// default store that cannot be read is an error.
func (r *tenantRecorder) ParkedKeys(ctx context.Context, topic string) ([]fxbus.ParkedKey, error) {
	listed, left, err := r.stores(ctx)
	if err != nil {
		return nil, err
	}
	read := r.readParkedKeys(ctx, topic, listed, left)
	var keys []fxbus.ParkedKey
	var defErr error // the default store's
	for id := range listed {
		ks, err := read[id].keys, read[id].err
		switch {
		case err == nil:
		case id != "" && missingTable(err):
			// Not migrated yet, or its schema dropped: nothing is parked
			// there, and the outbox does not serve it.
			if r.forgetParks(id) {
				r.log.Warn("a tenant store that held parked keys has lost its table of them: its keys are free",
					zap.String("tenant", id), zap.String("topic", topic), zap.Error(err))
			}
			continue
		case id != "":
			r.log.Warn("the parked keys of a tenant store cannot be read: its tenant's keyed messages wait until it answers",
				zap.String("tenant", id), zap.String("topic", topic), zap.Error(err))
			keys = append(keys, fxbus.ParkedKey{Tenant: id})
			continue
		default:
			defErr = fmt.Errorf("the default store: %w", err)
			continue
		}
		if len(ks) > 0 {
			r.parked(id)
		}
		keys = append(keys, ks...)
	}
	for id, a := range left {
		known := r.knownParked(id)
		ks, err := read[id].keys, read[id].err
		switch {
		case err != nil && known:
			r.log.Warn("the parked keys of a tenant store that left the source cannot be read: they stay parked there, and the bus takes their messages as free",
				zap.String("tenant", id), zap.String("topic", topic), zap.Error(err))
			continue
		case err != nil:
			r.log.Warn("a tenant store that left the source cannot be read: it is forgotten, this process knowing of no key parked there",
				zap.String("tenant", id), zap.String("topic", topic), zap.Error(err))
			r.drop(id, a)
			continue
		case len(ks) == 0 && !known:
			r.drop(id, a) // left, holding nothing
			continue
		}
		if len(ks) > 0 {
			r.parked(id)
		}
		keys = append(keys, ks...)
	}
	if defErr != nil {
		return nil, defErr
	}
	slices.SortFunc(keys, func(a, b fxbus.ParkedKey) int {
		return cmp.Or(strings.Compare(a.Tenant, b.Tenant), strings.Compare(a.Key, b.Key))
	})
	return slices.Compact(keys), nil
}

// parkedRead is one store's parked keys, or why they could not be read.
type parkedRead struct {
	keys []fxbus.ParkedKey
	err  error
}

// storeReads is how many stores' parked keys are read at once: stores
// that hang cost the bus's start, or a lane's takeover, one StoreTimeout
// per storeReads of them, not one each.
const storeReads = 8

// readParkedKeys reads the parked keys of topic of every store of
// listed and left, storeReads at a time, each within storeTimeout.
func (r *tenantRecorder) readParkedKeys(ctx context.Context, topic string, listed, left map[string]*Admin) map[string]parkedRead {
	var (
		mu    sync.Mutex
		read  = make(map[string]parkedRead, len(listed)+len(left))
		wg    sync.WaitGroup
		slots = make(chan struct{}, storeReads)
	)
	for _, stores := range []map[string]*Admin{listed, left} {
		for id, a := range stores {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				keys, err := r.parkedKeysOf(ctx, a, topic)
				mu.Lock()
				defer mu.Unlock()
				read[id] = parkedRead{keys, err}
			})
		}
	}
	wg.Wait()
	return read
}

// inStore runs f, one read of a store's, within StoreTimeout (if any):
// a store that hangs (a lock held on its table, a server that stopped
// answering) fails as one that cannot be read, the error saying so when
// the deadline, not ctx, ended it.
func (r *tenantRecorder) inStore(ctx context.Context, f func(context.Context) error) error {
	if r.storeTimeout <= 0 {
		return f(ctx)
	}
	sctx, cancel := context.WithTimeout(ctx, r.storeTimeout)
	defer cancel()
	err := f(sctx)
	if err != nil && ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within RelayConfig.StoreTimeout (%v): %w", r.storeTimeout, err)
	}
	return err
}

// parkedKeysOf reads a's parked keys of topic, within StoreTimeout.
func (r *tenantRecorder) parkedKeysOf(ctx context.Context, a *Admin, topic string) (keys []fxbus.ParkedKey, err error) {
	err = r.inStore(ctx, func(ctx context.Context) error {
		keys, err = a.ParkedKeys(ctx, topic)
		return err
	})
	return keys, err
}

// missingTable says whether err is a database's "no such table" (or
// schema): the store's tables are not there, so nothing is parked in it.
func missingTable(err error) bool {
	var coded interface{ SQLState() string }
	if errors.As(err, &coded) {
		switch coded.SQLState() {
		case "42P01", "3F000": // PostgreSQL's undefined_table, invalid_schema_name
			return true
		}
	}
	msg := err.Error()
	return strings.Contains(msg, "no such table") || // SQLite
		strings.Contains(msg, "Error 1146 (42S02)") || // MySQL, MariaDB: the table does not exist
		strings.Contains(msg, "Error 1049 (42000)") // the database does not
}

// Admit asks msg's tenant's store, where its tenant parks its key.
func (r *tenantRecorder) Admit(ctx context.Context, topic, key string, msg *message.Message) (fxbus.Admission, error) {
	id, a, err := r.storeOf(ctx, msg, nil)
	if err != nil {
		return 0, err
	}
	// Within StoreTimeout: a store that hangs fails the message's
	// attempt, which the bus redelivers, rather than holding one of the
	// subscription's InFlight places until it answers.
	var adm fxbus.Admission
	if err := r.inStore(ctx, func(ctx context.Context) (err error) {
		adm, err = a.Admit(ctx, topic, key, msg)
		return err
	}); err != nil {
		return 0, fmt.Errorf("tenant %s: %w", quoteTenant(id), err)
	}
	switch adm {
	case fxbus.AdmitReplay:
		r.remember(admitted{topic, key, msg.UUID}, released{a: a})
	case fxbus.AdmitParked:
		r.parked(id)
	}
	return adm, nil
}

// Arrived tells the store that admitted the released message id.
func (r *tenantRecorder) Arrived(ctx context.Context, topic, key, id string) error {
	rel, ok := r.forget(admitted{topic, key, id})
	if !ok {
		return r.everyStore(func(a *Admin) error { return a.Arrived(ctx, topic, key, id) })
	}
	return rel.a.Arrived(ctx, topic, key, id)
}

// Repark tells the store that admitted the released message id.
func (r *tenantRecorder) Repark(ctx context.Context, topic, key, id string, reason error) error {
	rel, ok := r.forget(admitted{topic, key, id})
	if !ok {
		return r.everyStore(func(a *Admin) error { return a.Repark(ctx, topic, key, id, reason) })
	}
	return rel.a.Repark(ctx, topic, key, id, reason)
}

// storeOf is the Admin of msg's tenant's store: the default store's for
// a message without a tenant, one dead-lettered because its tenant is
// unknown (reason), and one whose tenant the source does not resolve to
// a store it lists. The tenant in msg's metadata is untrusted: it is
// only ever compared, byte for byte, with the ids of stores the source
// lists, or handed to the source's Resolve; never spliced into SQL.
func (r *tenantRecorder) storeOf(ctx context.Context, msg *message.Message, reason error) (string, *Admin, error) {
	id := msg.Metadata.Get(fxbus.MetadataTenant)
	if id == "" || (reason != nil && errors.Is(reason, fxbus.ErrUnknownTenant)) {
		return "", r.def, nil
	}
	if a := r.cached(id); a != nil {
		return id, a, nil
	}
	if !tenantIDValid(id) {
		return "", r.def, nil
	}
	known, err := r.src.Resolve(ctx, id)
	switch {
	case errors.Is(err, fxbus.ErrUnknownTenant):
		return "", r.def, nil
	case err != nil:
		return "", nil, fmt.Errorf("fxoutbox: the dead letter's tenant %s: %w", quoteTenant(id), err)
	case known == "":
		return "", r.def, nil
	}
	if a := r.cached(known); a != nil {
		return known, a, nil
	}
	list, err := r.src.Stores(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("fxoutbox: TenantStores.Stores: %w", err)
	}
	for _, ts := range list {
		if ts.ID == known {
			a, err := r.admin(ts)
			return known, a, err
		}
	}
	return "", r.def, nil // a tenant without a store of its own: its work failed as unknown too
}

// tenantIDValid is fxbus's own check of an id in incoming metadata,
// before the source's Resolve is asked about it.
func tenantIDValid(id string) bool {
	return len(id) <= fxbus.MaxTenantIDLength && utf8.ValidString(id) && !slices.ContainsFunc([]rune(id), unicode.IsControl)
}

func (r *tenantRecorder) cached(id string) *Admin {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.admins[id]
}

// admin is the Admin of ts, made once (checked as the outbox checks a
// store) and kept.
func (r *tenantRecorder) admin(ts TenantStore) (*Admin, error) {
	if a := r.cached(ts.ID); a != nil {
		return a, nil
	}
	if err := checkStore(ts); err != nil {
		return nil, err
	}
	db, d := ts.DB, ts.Dialect
	if db == nil {
		db = r.db
	}
	if d == 0 {
		d = r.cfg.Dialect
	}
	if ts.Schema != "" && d != PostgreSQL {
		return nil, fmt.Errorf("fxoutbox: tenant %s: a schema per tenant needs PostgreSQL", quoteTenant(ts.ID))
	}
	a, err := NewAdmin(db, d, r.cfg.Tables, r.cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: tenant %s: %w", quoteTenant(ts.ID), err)
	}
	if ts.Schema != "" {
		a = a.InSchema(ts.Schema)
	}
	a = a.WithLanes(r.cfg.Relay)
	r.mu.Lock()
	defer r.mu.Unlock()
	if had := r.admins[ts.ID]; had != nil {
		return had, nil
	}
	r.admins[ts.ID] = a
	return a, nil
}

// stores is the Admin by tenant id of every store the source lists, the
// default ("") among them, and of those made before that it no longer
// lists (left), whose parked letters may still wait for their release. A
// listed store that is wrong (its schema name, say) is left out: the
// outbox leaves it out too, and logs why, so nothing of the bus's was
// recorded there.
func (r *tenantRecorder) stores(ctx context.Context) (listed, left map[string]*Admin, err error) {
	list, err := r.src.Stores(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("fxoutbox: TenantStores.Stores: %w", err)
	}
	listed = map[string]*Admin{"": r.def}
	for _, ts := range list {
		if a, err := r.admin(ts); err == nil {
			listed[ts.ID] = a
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	left = map[string]*Admin{}
	for id, a := range r.admins {
		if listed[id] == nil {
			left[id] = a
		}
	}
	return listed, left, nil
}

// parked notes that store id holds a parked key.
func (r *tenantRecorder) parked(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.parks[id] = true
}

func (r *tenantRecorder) knownParked(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.parks[id]
}

// forgetParks notes that store id holds no parked key, and says whether
// it was known to.
func (r *tenantRecorder) forgetParks(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	had := r.parks[id]
	delete(r.parks, id)
	return had
}

// drop forgets a, store id's Admin, unless the store came back meanwhile
// with another.
func (r *tenantRecorder) drop(id string, a *Admin) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.admins[id] == a {
		delete(r.admins, id)
		delete(r.parks, id)
	}
}

// remember keeps rel until k's Arrived or Repark, within admitTTL and
// maxAdmits (see them).
func (r *tenantRecorder) remember(k admitted, rel released) {
	now := r.now()
	rel.at = now
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.swept) >= admitTTL/10 {
		r.swept = now
		for k, old := range r.admits {
			if now.Sub(old.at) >= admitTTL {
				delete(r.admits, k)
			}
		}
	}
	if _, again := r.admits[k]; !again && len(r.admits) >= r.maxAdmits {
		var oldest admitted
		first := true
		for k, old := range r.admits {
			if first || old.at.Before(r.admits[oldest].at) {
				oldest, first = k, false
			}
		}
		delete(r.admits, oldest)
	}
	r.admits[k] = rel
}

func (r *tenantRecorder) forget(k admitted) (released, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rel, ok := r.admits[k]
	delete(r.admits, k)
	return rel, ok
}

// everyStore runs do on the default store and every store made: for a
// released message this process did not admit, which only the store
// that holds it matches.
func (r *tenantRecorder) everyStore(do func(a *Admin) error) error {
	r.mu.Lock()
	list := []*Admin{r.def}
	for _, a := range r.admins {
		list = append(list, a)
	}
	r.mu.Unlock()
	var errs []error
	for _, a := range list {
		errs = append(errs, do(a))
	}
	return errors.Join(errs...)
}
