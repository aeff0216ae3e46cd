package relay_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/lease"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/schema"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
)

// lingerClock is a wall clock that stands still and whose timers fire
// only when the test says: each wait the relay asks for is sent on asked,
// with the channel that ends it.
type lingerClock struct {
	now   time.Time
	asked chan lingerWait
}

type lingerWait struct {
	d    time.Duration
	fire chan time.Time
}

func (c *lingerClock) Now() time.Time { return c.now }

func (c *lingerClock) After(d time.Duration) <-chan time.Time {
	w := lingerWait{d: d, fire: make(chan time.Time, 1)}
	c.asked <- w
	return w.fire
}

// A relay that has just sent rows lets the commits of the next Linger
// gather into one batch: a wake then waits for the linger, and the rows
// of every commit in between go in one pass. A relay that was idle (its
// last pass sent nothing) passes at once.
func TestLinger(t *testing.T) {
	outboxtest.ForEach(t, func(t *testing.T, d outboxtest.Database) {
		const linger = 50 * time.Millisecond
		clock := outboxtest.NewClock(time.Now())
		wall := &lingerClock{now: time.Now(), asked: make(chan lingerWait, 8)}
		pub := &publisher{}
		q := schema.NewQueries(d.Dialect, schema.WithDefaults(schema.Tables{}))
		st := lease.Statements{Renew: q.RenewLease, Take: q.TakeLease, Drop: q.DropLease, DropAll: q.DropLeases}
		// Each batch deleted as it goes: no progress window asks the wall
		// clock for a wait, only the linger does.
		cfg := relay.Config{Linger: linger, ProgressInterval: -1, Lease: time.Hour}
		r := relay.New(relay.Params{
			DB: d.DB, Queries: q, Bus: bus{pub}, Local: noLocal{}, Log: zap.NewNop(), Config: cfg,
			Now: clock.Now, After: clock.After, WallNow: wall.Now, WallAfter: wall.After,
			Leases: lease.NewHolder(d.DB, st, "a", time.Hour, clock.Now),
		})
		r.Start()
		eventually(t, func() bool { return r.Passes() >= 1 }, "the first pass, with nothing to send")

		insertRows(t, d, "orders", 1, 1)
		r.Wrote([]schema.Lane{{Topic: "orders"}})
		eventually(t, func() bool { return len(pub.published()) == 1 }, "an idle relay sends at once")
		select {
		case w := <-wall.asked:
			t.Fatalf("an idle relay lingered %s", w.d)
		default:
		}

		insertRows(t, d, "orders", 2, 3)
		r.Wrote([]schema.Lane{{Topic: "orders"}})
		var w lingerWait
		select {
		case w = <-wall.asked:
		case <-time.After(time.Minute): // a bound on a broken relay, not synchronisation
			t.Fatal("the relay did not linger after a pass that sent a row")
		}
		assert.Equal(t, linger, w.d, "the wall clock stands still: the whole linger from the pass's start")
		passes := r.Passes()
		assert.Equal(t, []string{"m1"}, pub.published(), "nothing sent while it lingers")
		insertRows(t, d, "orders", 4, 4) // a commit during the linger joins the batch
		r.Wrote([]schema.Lane{{Topic: "orders"}})

		w.fire <- wall.now
		eventually(t, func() bool { return len(pub.published()) == 4 }, "the gathered rows sent")
		eventually(t, func() bool { return r.Passes() == passes+1 }, "the pass done")
		assert.Equal(t, []string{"m1", "m2", "m3", "m4"}, pub.published())
		assert.Equal(t, passes+1, r.Passes(), "both commits' rows in one pass")
		require.NoError(t, r.Close(context.Background()))
		assert.Zero(t, waiting(t, d))
	})
}

// Linger defaults to 2ms, decodes as a duration string, and a negative
// one passes at every wake.
func TestLingerConfig(t *testing.T) {
	assert.Equal(t, 2*time.Millisecond, relay.WithDefaults(relay.Config{}).Linger)
	assert.Negative(t, relay.WithDefaults(relay.Config{Linger: -1}).Linger)
	var c relay.Config
	require.NoError(t, json.Unmarshal([]byte(`{"linger":"5ms"}`), &c))
	assert.Equal(t, 5*time.Millisecond, c.Linger)
}
