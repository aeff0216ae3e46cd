package fxbus_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
)

// Blob is the large event of these tests.
type Blob struct{ Data string }

// A 20 MB event goes from a handler's emit, through the default broker,
// to a subscription's handler, and is acknowledged. What it costs is its
// JSON, encoded once and decoded once (the broker copies nothing): about
// 0.4 s here, 5 s under the race detector, more on a loaded machine;
// the deadline is generous, and nothing is timed.
func TestTwentyMegabyteEvent(t *testing.T) {
	t.Parallel()
	tp := topic(t, "blob")
	got := newInbox[int]()
	var (
		m   *fxcqrs.Mediator
		bus *fxbus.Bus
	)
	service(t, nil, nil,
		fx.Populate(&m, &bus),
		fxbus.Route[Blob](tp),
		fxbus.Subscribe[Blob](tp),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, _ PlaceOrder) error {
				fxcqrs.Emit(ctx, Blob{Data: strings.Repeat("x", 20<<20)})
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Blob] {
			return func(ctx context.Context, e Blob) error {
				if fxbus.MessageID(ctx) != "" { // the subscription's, not the emit's in-process run
					got.add(len(e.Data))
				}
				return nil
			}
		}),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	deadline := time.After(5 * time.Minute)
	select {
	case <-got.more:
	case <-deadline:
		t.Fatal("the 20 MB event was not handled")
	}
	assert.Equal(t, []int{20 << 20}, got.all())
	require.Eventually(t, func() bool { return bus.Stats().Handled == 1 }, 5*time.Minute, 10*time.Millisecond, "acknowledged")
}

// countingJSON is JSON that counts its decodings.
type countingJSON struct {
	fxbus.JSON
	decodes *atomic.Int32
}

func (c countingJSON) Unmarshal(data []byte, into any) error {
	c.decodes.Add(1)
	return c.JSON.Unmarshal(data, into)
}

// A message whose handlers are retried is decoded once, not once per
// attempt: a large payload costs its decoding once.
func TestRetriesDecodeOnce(t *testing.T) {
	t.Parallel()
	gc := goChannel(t)
	tp := topic(t, "retried")
	decodes := new(atomic.Int32)
	var attempts atomic.Int32
	done := newInbox[int32]()
	m := service(t, gc, gc,
		fx.Supply(fx.Annotate(countingJSON{decodes: decodes}, fx.As(new(fxbus.Marshaler)))),
		fxbus.Route[Blob](tp),
		fxbus.Subscribe[Blob](tp, fxbus.Retry(fxbus.RetryPolicy{MaxRetries: 3, InitialInterval: 1, MaxInterval: 1})),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, _ PlaceOrder) error {
				fxcqrs.Emit(ctx, Blob{Data: "small"})
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[Blob] {
			return func(ctx context.Context, _ Blob) error {
				if fxbus.MessageID(ctx) == "" {
					return nil
				}
				n := attempts.Add(1)
				if n < 3 {
					return errors.New("not yet")
				}
				done.add(n)
				return nil
			}
		}),
	)
	require.NoError(t, fxcqrs.Exec(context.Background(), m, PlaceOrder{}))
	assert.Equal(t, []int32{3}, done.wait(t, 1), "handled at the third attempt")
	assert.Equal(t, int32(1), decodes.Load(), "decoded once")
}
