package amqpbus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// flakyStore is a lease store that fails while down is set: a database
// that cannot be reached for a while.
type flakyStore struct {
	fxbus.LeaseStore
	down atomic.Bool
}

var errDown = errors.New("the store cannot be reached")

func (s *flakyStore) List(ctx context.Context, prefix string) (map[string]fxbus.LeaseEntry, error) {
	if s.down.Load() {
		return nil, errDown
	}
	return s.LeaseStore.List(ctx, prefix)
}

func (s *flakyStore) Put(ctx context.Context, name string, value []byte, rev uint64) (uint64, error) {
	if s.down.Load() {
		return 0, errDown
	}
	return s.LeaseStore.Put(ctx, name, value, rev)
}

// A replica whose lease store cannot be reached for longer than its
// lease less the margin is fenced: its handlers' effects are refused
// (fxbus.Fenced, as the inbox checks) and the messages nacked. Each
// comes back in its place, before its key's later ones, once the lease
// is renewed: the key's order holds through the fence, however the
// fenced windows fall.
func TestAFencedMessageComesBackInItsPlace(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds; not with -short")
	}
	t.Parallel()
	addr := amqpURL(t)
	tp := laneTopic(t, addr, "svc", 4)
	store := &flakyStore{LeaseStore: ownership.NewMemory()}
	ps := newPubSub(t, amqpbus.Config{URL: addr, Group: "svc", Lanes: 4, Leases: store, Lease: 400 * time.Millisecond, Member: "a"})
	require.NoError(t, ps.ProvisionConsumer(context.Background(), tp))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := ps.SubscribeFlow(ctx, tp, fxbus.Flow{InFlight: 32, InOrder: true})
	require.NoError(t, err)

	const keys, perKey = 8, 400
	var (
		mu      sync.Mutex
		handled = map[string][]int{}
		fenced  atomic.Int64
	)
	var handlers sync.WaitGroup
	handlers.Go(func() {
		var wg sync.WaitGroup
		defer wg.Wait()
		for m := range ch {
			wg.Go(func() {
				time.Sleep(3 * time.Millisecond) // the handler's work
				if fxbus.Fenced(m.Context()) != nil {
					fenced.Add(1)
					m.Nack()
					return
				}
				key, seq, _ := strings.Cut(string(m.Payload), ":")
				n, _ := strconv.Atoi(seq)
				mu.Lock()
				handled[key] = append(handled[key], n)

				mu.Unlock()
				m.Ack()
			})
		}
	})
	done := make(chan struct{})
	var outages sync.WaitGroup
	outages.Go(func() {
		// The store down, again and again, for about the lease less its
		// margin (300ms): the lease runs out for a moment, and comes back
		// before or after a step notices it.
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(150 * time.Millisecond): // up: the clock under test
			}
			store.down.Store(true)
			time.Sleep(time.Duration(280+10*(i%10)) * time.Millisecond) // down: the clock under test
			store.down.Store(false)
		}
	})
	defer outages.Wait()
	defer close(done)
	for i := range perKey {
		var batch []*message.Message
		for k := range keys {
			key := fmt.Sprintf("k%d", k)
			m := message.NewMessage(fmt.Sprintf("%s-%d", key, i+1), fmt.Appendf(nil, "%s:%d", key, i+1))
			m.Metadata.Set(fxbus.MetadataKey, key)
			batch = append(batch, m)
		}
		require.NoError(t, ps.Publish(tp, batch...))
	}
	eventually(t, "every message is handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, seqs := range handled {
			n += len(seqs)
		}
		return n >= keys*perKey
	})
	cancel()
	handlers.Wait()
	wrong := 0
	for key, seqs := range handled {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] < seqs[i-1] {
				wrong++
				t.Logf("key %s out of order: %v", key, seqs[max(0, i-4):min(len(seqs), i+4)])
			}
		}
	}
	t.Logf("%d messages, %d handlings refused by the fence, %d out of order", keys*perKey, fenced.Load(), wrong)
	assert.Positive(t, fenced.Load(), "handlings refused by the fence")
	assert.Zero(t, wrong)
}
