package fxoutbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// The bus's dead letters and parked keys with a store per tenant: a
// consumed message of tenant X that is dead-lettered or parked is
// recorded in X's store, beside X's data, where Outbox.AdminOf(X) and the
// command line's -tenant find it. It is built from the database and the
// tenant source alone, as the bus's recorder must be (the outbox needs
// the bus): it keeps an Admin per store of its own, made on first use.
//
// A key is parked per tenant: tenant X's parked key k holds back X's
// later messages of k, never tenant Y's, whose data and repairs are
// apart. The bus knows its parked keys by key alone (fxbus.InOrder), and
// forgets a key the first time its Parking says a message of it is free;
// so a message of Y whose key X has parked is admitted as a release
// (fxbus.AdmitReplay) rather than as free, which handles it and keeps the
// bus asking about the key for X's next message. Should it fail for good,
// it parks its key in Y's store (Repark).

// tenantRecorder is the fxbus.DeadLetterRecorder and fxbus.Parking of an
// outbox with tenant stores.
type tenantRecorder struct {
	def *Admin       // the default store's: the outbox's own database
	src TenantStores // trusted: the application's
	db  *sql.DB      // the outbox's, for the stores in a schema of it
	cfg Config

	mu     sync.Mutex
	admins map[string]*Admin     // by store id; kept after the store leaves the source
	parks  map[*Admin]bool       // the stores this process knows to have parked a key
	admits map[admitted]released // released messages between Admit and Arrived or Repark
}

// admitted names a released message of a topic's key.
type admitted struct{ topic, key, id string }

// released is where an admitted message's Arrived or Repark goes: a, or,
// for a message admitted only because another tenant parked its key
// (free), msg's own store, where it would park.
type released struct {
	a    *Admin
	free bool
	msg  *message.Message
}

// newDeadLetterRecorder is the bus's recorder and parking: the default
// store's Admin without tenant stores, else one that routes by tenant.
func newDeadLetterRecorder(db *sql.DB, cfg Config, src TenantStores) (fxbus.DeadLetterRecorder, error) {
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
	return &tenantRecorder{
		def: def, src: src, db: db, cfg: cfg,
		admins: map[string]*Admin{}, parks: map[*Admin]bool{}, admits: map[admitted]released{},
	}, nil
}

var (
	_ fxbus.DeadLetterRecorder = (*tenantRecorder)(nil)
	_ fxbus.Parking            = (*tenantRecorder)(nil)
)

// RecordDeadLetter records msg in its tenant's store; a message
// dead-lettered because its tenant is unknown, in the default store.
func (r *tenantRecorder) RecordDeadLetter(ctx context.Context, topic string, msg *message.Message, reason error) error {
	a, err := r.storeOf(ctx, msg, reason)
	if err != nil {
		return err
	}
	return a.RecordDeadLetter(ctx, topic, msg, reason)
}

// RecordParked records msg in its tenant's store, where it parks its key.
func (r *tenantRecorder) RecordParked(ctx context.Context, topic, key string, msg *message.Message, reason error) error {
	a, err := r.storeOf(ctx, msg, reason)
	if err != nil {
		return err
	}
	if err := a.RecordParked(ctx, topic, key, msg, reason); err != nil {
		return err
	}
	r.parked(a)
	return nil
}

// ParkedKeys returns topic's keys parked in any store: the default one,
// every store the source lists, and those that left it. A store that
// cannot be read is an error, naming its tenant: a key missed would lose
// its order.
func (r *tenantRecorder) ParkedKeys(ctx context.Context, topic string) ([]string, error) {
	stores, err := r.all(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	var errs []error
	for id, a := range stores {
		ks, err := a.ParkedKeys(ctx, topic)
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", quoteTenant(id), err))
			continue
		}
		if len(ks) > 0 {
			r.parked(a)
		}
		keys = append(keys, ks...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// Admit asks msg's tenant's store. A key free there but parked in
// another store is admitted as released (see the top of this file).
func (r *tenantRecorder) Admit(ctx context.Context, topic, key string, msg *message.Message) (fxbus.Admission, error) {
	a, err := r.storeOf(ctx, msg, nil)
	if err != nil {
		return 0, err
	}
	adm, err := a.Admit(ctx, topic, key, msg)
	if err != nil {
		return 0, err
	}
	switch adm {
	case fxbus.AdmitReplay:
		r.remember(admitted{topic, key, msg.UUID}, released{a: a})
	case fxbus.AdmitParked:
		r.parked(a)
	case fxbus.AdmitFree:
		elsewhere, err := r.parkedElsewhere(ctx, topic, key, a)
		if err != nil {
			return 0, err
		}
		if elsewhere {
			r.remember(admitted{topic, key, msg.UUID}, released{a: a, free: true, msg: msg})
			return fxbus.AdmitReplay, nil
		}
	}
	return adm, nil
}

// Arrived tells the store that admitted the released message id.
func (r *tenantRecorder) Arrived(ctx context.Context, topic, key, id string) error {
	rel, ok := r.forget(admitted{topic, key, id})
	switch {
	case !ok:
		return r.everyStore(func(a *Admin) error { return a.Arrived(ctx, topic, key, id) })
	case rel.free:
		return nil // nothing of it was parked
	}
	return rel.a.Arrived(ctx, topic, key, id)
}

// Repark tells the store that admitted the released message id; a
// message admitted only because another tenant parked its key parks it
// in its own store now (unless its tenant is unknown or it expired:
// those dead-letter without parking, as the bus does).
func (r *tenantRecorder) Repark(ctx context.Context, topic, key, id string, reason error) error {
	rel, ok := r.forget(admitted{topic, key, id})
	switch {
	case !ok:
		return r.everyStore(func(a *Admin) error { return a.Repark(ctx, topic, key, id, reason) })
	case !rel.free:
		return rel.a.Repark(ctx, topic, key, id, reason)
	case errors.Is(reason, fxbus.ErrUnknownTenant):
		return r.def.RecordDeadLetter(ctx, topic, rel.msg, reason)
	case errors.Is(reason, fxbus.ErrExpired):
		return rel.a.RecordDeadLetter(ctx, topic, rel.msg, reason)
	}
	return r.RecordParked(ctx, topic, key, rel.msg, reason)
}

// storeOf is the Admin of msg's tenant's store: the default store's for
// a message without a tenant, one dead-lettered because its tenant is
// unknown (reason), and one whose tenant the source does not resolve to
// a store it lists. The tenant in msg's metadata is untrusted: it is
// only ever compared, byte for byte, with the ids of stores the source
// lists, or handed to the source's Resolve; never spliced into SQL.
func (r *tenantRecorder) storeOf(ctx context.Context, msg *message.Message, reason error) (*Admin, error) {
	id := msg.Metadata.Get(fxbus.MetadataTenant)
	if id == "" || (reason != nil && errors.Is(reason, fxbus.ErrUnknownTenant)) {
		return r.def, nil
	}
	if a := r.cached(id); a != nil {
		return a, nil
	}
	if !tenantIDValid(id) {
		return r.def, nil
	}
	known, err := r.src.Resolve(ctx, id)
	switch {
	case errors.Is(err, fxbus.ErrUnknownTenant):
		return r.def, nil
	case err != nil:
		return nil, fmt.Errorf("fxoutbox: the dead letter's tenant %s: %w", quoteTenant(id), err)
	case known == "":
		return r.def, nil
	}
	if a := r.cached(known); a != nil {
		return a, nil
	}
	list, err := r.src.Stores(ctx)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: TenantStores.Stores: %w", err)
	}
	for _, ts := range list {
		if ts.ID == known {
			return r.admin(ts)
		}
	}
	return r.def, nil // a tenant without a store of its own: its work failed as unknown too
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

// all is every store's Admin by tenant id ("": the default): those the
// source lists now, and those made before that it no longer lists, whose
// parked letters still wait for their release. A listed store that is
// wrong (its schema name, say) is left out: the outbox leaves it out
// too, and logs why, so nothing of the bus's was recorded there.
func (r *tenantRecorder) all(ctx context.Context) (map[string]*Admin, error) {
	list, err := r.src.Stores(ctx)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: TenantStores.Stores: %w", err)
	}
	for _, ts := range list {
		_, _ = r.admin(ts)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*Admin, len(r.admins)+1)
	for id, a := range r.admins {
		out[id] = a
	}
	out[""] = r.def
	return out, nil
}

// parked notes that a's store has parked a key.
func (r *tenantRecorder) parked(a *Admin) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.parks[a] = true
}

// parkedElsewhere says whether a store but except, among those this
// process knows to have parked a key, has topic's key parked.
func (r *tenantRecorder) parkedElsewhere(ctx context.Context, topic, key string, except *Admin) (bool, error) {
	r.mu.Lock()
	var others []*Admin
	for a := range r.parks {
		if a != except {
			others = append(others, a)
		}
	}
	r.mu.Unlock()
	for _, a := range others {
		keys, err := a.ParkedKeys(ctx, topic)
		if err != nil {
			return false, err
		}
		if slices.Contains(keys, key) {
			return true, nil
		}
	}
	return false, nil
}

func (r *tenantRecorder) remember(k admitted, rel released) {
	r.mu.Lock()
	defer r.mu.Unlock()
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
