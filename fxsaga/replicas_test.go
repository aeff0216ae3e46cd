package fxsaga_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// inFlight tracks which sagas a step is acting on, to catch two replicas
// driving one saga at once.
type inFlight struct {
	mu       sync.Mutex
	acting   map[string]int
	overlaps []string
}

// tracked is a step that writes its idempotency key in the step's
// transaction, under the in-flight tracker.
type tracked struct {
	writing
	f *inFlight
}

func (s tracked) Act(ctx context.Context, o *Order) error {
	id := fxsaga.IdempotencyKey(ctx)[:36]
	s.f.mu.Lock()
	s.f.acting[id]++
	if s.f.acting[id] > 1 {
		s.f.overlaps = append(s.f.overlaps, fxsaga.IdempotencyKey(ctx))
	}
	s.f.mu.Unlock()
	defer func() {
		s.f.mu.Lock()
		s.f.acting[id]--
		s.f.mu.Unlock()
	}()
	return s.writing.Act(ctx, o)
}

// replica is one recovering process: its own mediator, unit of work and
// store (its own owner id) on the shared database.
func replica(t *testing.T, d database, lease time.Duration) (*fxsaga.Runner, *fxsaga.SQL) {
	t.Helper()
	r, store, _ := newSQLRunner(t, d, setup{lease: lease, config: fxsaga.RunnerConfig{CompensationBackoff: time.Millisecond}})
	return r, store
}

// Two replicas recover the same 200 interrupted sagas of one PostgreSQL
// database at once, in a loop until none is left. With a lease longer
// than the work, no saga is driven by both at once; with a lease that
// expires under the first owner's feet, the second takes sagas over and
// the first's saves are fenced. Either way every step's write committed
// exactly once, and every saga completed.
func TestTwoReplicas(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		lease   time.Duration
		overlap bool // may a step act on both at once (its write still fenced)
	}{
		{"lease held", 30 * time.Second, false},
		{"lease expiring", 5 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := openDatabase(t, fxoutbox.PostgreSQL)
			_, err := d.DB.Exec("CREATE TABLE effects (saga_key VARCHAR(128) NOT NULL)")
			require.NoError(t, err)
			ctx := context.Background()
			f := &inFlight{acting: map[string]int{}}
			s := fxsaga.Define[Order]("replicated",
				tracked{writing{d: d, name: "a"}, f}, tracked{writing{d: d, name: "b"}, f}, tracked{writing{d: d, name: "c"}, f})

			seed, err := fxsaga.NewSQL(d.DB, d.Dialect, fxsaga.Tables{}, 0)
			require.NoError(t, err)
			const n = 200
			for i := range n {
				require.NoError(t, seed.Create(ctx, fxsaga.State{
					ID: uuid.NewString(), Name: "replicated", Status: fxsaga.Running, Step: 1, Version: 1,
					Context: fmt.Appendf(nil, `{"ID":%d}`, i),
				}))
			}
			_, err = d.DB.Exec("UPDATE fxcqrs_sagas SET lease_until_ns = 0") // their replica crashed
			require.NoError(t, err)

			// Each replica recovers until nothing is left. One that finds
			// every saga leased to the other (30 s in "lease held") has
			// nothing to do until the other's round ends, so it waits for
			// that, not for a count of its own rounds: a busy machine
			// slows the other, it does not stall it.
			start := make(chan struct{})
			var wg sync.WaitGroup
			fenced := make([]int, 2)
			rounds := [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}
			deadline := time.After(2 * time.Minute)
			for k := range 2 {
				r, store := replica(t, d, tc.lease)
				wg.Go(func() {
					<-start
					for {
						err := fxsaga.Recover(ctx, r, s)
						if errors.Is(err, fxsaga.ErrFenced) {
							fenced[k]++
						} else if !assert.NoError(t, err) {
							return
						}
						select { // tell the other replica a round ended
						case rounds[1-k] <- struct{}{}:
						default:
						}
						left, err := store.Unfinished(ctx, "replicated")
						if !assert.NoError(t, err) || len(left) == 0 {
							return
						}
						select {
						case <-rounds[k]:
						case <-deadline:
							t.Errorf("the replicas did not finish within 2 minutes: %d sagas left", len(left))
							return
						}
					}
				})
			}
			close(start)
			wg.Wait()
			var owners []int
			rows, err := d.DB.Query("SELECT COUNT(*) FROM fxcqrs_sagas GROUP BY owner")
			require.NoError(t, err)
			for rows.Next() {
				var c int
				require.NoError(t, rows.Scan(&c))
				owners = append(owners, c)
			}
			require.NoError(t, rows.Err())
			t.Logf("sagas finished per replica: %v; recover rounds fenced per replica: %v", owners, fenced)

			assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM fxcqrs_sagas WHERE status <> 'COMPLETED'"))
			assert.Equal(t, 2*n, count(t, d.DB, "SELECT COUNT(*) FROM effects"), "steps b and c of each saga")
			assert.Zero(t, count(t, d.DB, "SELECT COUNT(*) FROM (SELECT saga_key FROM effects GROUP BY saga_key HAVING COUNT(*) > 1) twice"),
				"no step's write committed twice")
			if !tc.overlap {
				assert.Empty(t, f.overlaps, "steps acted by both replicas at once")
			}
		})
	}
}
