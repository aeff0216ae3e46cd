package upkeep

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"go.uber.org/zap"
)

// InboxCleanerConfig configures the inbox's clean-up.
type InboxCleanerConfig struct {
	// Retention is how long a record is kept (fxoutbox.Config.InboxRetention).
	Retention time.Duration
	// Every is how often, by the outbox's clock, the cleaner runs; it
	// runs once when it starts. Default 10m.
	Every time.Duration
	// Batch bounds one clean-up statement, so that it holds its locks
	// briefly however many records are due. Default 1000.
	Batch int
	// Acquire takes a place in the connection budget for each batch (one
	// statement), given back before the next: a clean-up of a large
	// inbox must not hold a place from the relay for its whole run. Nil:
	// no budget.
	Acquire Acquire
}

// InboxCleaner deletes the inbox's records older than their retention, in
// bounded batches, when it starts and then every so often. Every replica
// runs one (they may run at once: a record is deleted once).
type InboxCleaner struct {
	service
	db    *sql.DB
	q     schema.Queries
	cfg   InboxCleanerConfig
	log   *zap.Logger
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
}

// NewInboxCleaner returns the cleaner of the inbox q names, on the
// outbox's clock (now, after).
func NewInboxCleaner(db *sql.DB, q schema.Queries, cfg InboxCleanerConfig, log *zap.Logger, now func() time.Time, after func(time.Duration) <-chan time.Time) *InboxCleaner {
	if cfg.Every <= 0 {
		cfg.Every = 10 * time.Minute
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 1000
	}
	return &InboxCleaner{service: newService("inbox cleaner"), db: db, q: q, cfg: cfg, log: log, now: now, after: after}
}

// Clean deletes the records older than the retention by the outbox's
// clock, a batch per statement, each under a place of the connection
// budget taken on ctx, and returns how many it deleted
// (fxoutbox.Outbox.CleanInbox).
func (c *InboxCleaner) Clean(ctx context.Context) (int64, error) {
	return c.clean(ctx, func() (func(), error) {
		if c.cfg.Acquire == nil {
			return func() {}, nil
		}
		return c.cfg.Acquire(ctx)
	})
}

// clean deletes batch after batch, each under a place that take takes
// and that is given back after it, so that another (the relay) may take
// it between two batches.
func (c *InboxCleaner) clean(ctx context.Context, take func() (func(), error)) (int64, error) {
	cutoff := c.now().Add(-c.cfg.Retention).UnixNano()
	var total int64
	for {
		n, err := c.batch(ctx, take, cutoff)
		if err != nil {
			return total, fmt.Errorf("fxoutbox: clean the inbox: %w", err)
		}
		total += n
		if n < int64(c.cfg.Batch) {
			return total, nil
		}
	}
}

// batch deletes at most a batch of the records handled before cutoff,
// under a place of take's.
func (c *InboxCleaner) batch(ctx context.Context, take func() (func(), error), cutoff int64) (int64, error) {
	release, err := take()
	if err != nil {
		return 0, err
	}
	defer release()
	res, err := c.db.ExecContext(ctx, c.q.InboxCleanup, cutoff, c.cfg.Batch)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Start runs the cleaner until Close.
func (c *InboxCleaner) Start() { c.start(c.loop) }

// Close stops the cleaner after the batch in hand, within ctx.
func (c *InboxCleaner) Close(ctx context.Context) error { return c.close(ctx) }

func (c *InboxCleaner) loop() {
	for {
		var n int64
		err := safely(c.log, "the inbox's clean-up", func() (err error) {
			// The stop ends a wait for a place, between two batches.
			n, err = c.clean(context.Background(), func() (func(), error) { return c.take(c.cfg.Acquire) })
			return err
		})
		if c.stopping() && err != nil {
			return // the stop ended its wait for a place: nothing failed
		}
		switch {
		case err != nil:
			c.log.Warn("upkeep: the inbox was not cleaned; it is tried again later", zap.Error(err))
		case n > 0:
			c.log.Debug("upkeep: inbox cleaned", zap.Int64("records", n))
		}
		select {
		case <-c.stop:
			return
		case <-c.after(c.cfg.Every):
		}
	}
}
