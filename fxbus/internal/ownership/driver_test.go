package ownership_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/ownership"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lockedClock is a clock the test moves while a Driver reads it.
type lockedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *lockedClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *lockedClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// watchedStore is a Memory that can be made unreachable while a Driver
// uses it, and tells of each lane lease given back.
type watchedStore struct {
	*ownership.Memory
	fail     atomic.Pointer[error]
	released chan string // a lane's name, each time its lease is given back
}

func newWatchedStore() *watchedStore {
	return &watchedStore{Memory: ownership.NewMemory(), released: make(chan string, 64)}
}

func (s *watchedStore) List(ctx context.Context, prefix string) (map[string]ownership.Entry, error) {
	if err := s.fail.Load(); err != nil {
		return nil, *err
	}
	return s.Memory.List(ctx, prefix)
}

func (s *watchedStore) Put(ctx context.Context, name string, value []byte, rev uint64) (uint64, error) {
	if err := s.fail.Load(); err != nil {
		return 0, *err
	}
	rev, err := s.Memory.Put(ctx, name, value, rev)
	var l ownership.Lease
	if err == nil && strings.HasPrefix(name, "lane.") && json.Unmarshal(value, &l) == nil && l.Owner == "" {
		s.released <- name
	}
	return rev, err
}

// owner is who holds lane name's lease in s, "" for none.
func (s *watchedStore) owner(t *testing.T, name string) string {
	t.Helper()
	entries, err := s.Memory.List(context.Background(), name)
	require.NoError(t, err)
	var l ownership.Lease
	if e, ok := entries[name]; ok {
		require.NoError(t, json.Unmarshal(e.Value, &l))
	}
	return l.Owner
}

// fakeLane is a lane a test's Driver consumes: the test sees it stopped
// or fenced, and waited on, and says when it has ended (its handlers are
// done).
type fakeLane struct {
	lease   fxbus.LaneLease
	stopped chan struct{}
	fenced  chan struct{}
	ended   chan struct{}
	waits   chan<- int // the lane's number, each time the Driver waits for it to end
	once    sync.Once
	fence   sync.Once
}

func (l *fakeLane) Fence()                  { l.fence.Do(func() { close(l.fenced) }) }
func (l *fakeLane) Fenced() <-chan struct{} { return l.ended }
func (l *fakeLane) Stop()                   { l.once.Do(func() { close(l.stopped) }) }

func (l *fakeLane) Wait() {
	select {
	case l.waits <- l.lease.Lane:
	default: // a test that does not look
	}
	<-l.ended
}

// driven is a Driver of member "a" over four lanes, stepped by the test.
type driven struct {
	store   *watchedStore
	clock   *lockedClock
	ticks   chan time.Time
	stop    chan struct{}
	kill    chan struct{}
	started chan *fakeLane
	waits   chan int // the lane each time the Driver waits for one to end
	trouble chan ownership.Trouble
	done    chan struct{}
}

// drive starts a driven Driver; a killable one has no Stop, so that a
// kill ends it at once.
func drive(t *testing.T, killable bool) *driven {
	t.Helper()
	d := &driven{
		store: newWatchedStore(), clock: &lockedClock{t: time.Unix(1_700_000_000, 0)},
		ticks: make(chan time.Time), stop: make(chan struct{}), kill: make(chan struct{}),
		started: make(chan *fakeLane, 16), waits: make(chan int, 64), trouble: make(chan ownership.Trouble, 64), done: make(chan struct{}),
	}
	stop := d.stop
	if killable {
		stop = nil
	}
	co, err := ownership.New(d.store, ownership.Config{Member: "a", Lanes: 4, Lease: 3 * time.Second, Now: d.clock.now})
	require.NoError(t, err)
	driver := ownership.NewDriver(co, ownership.DriverConfig{
		Warn: func(tr ownership.Trouble, _ int, _ error) { d.trouble <- tr }, Stop: stop, Kill: d.kill, Ticks: d.ticks,
		Start: func(lease fxbus.LaneLease) (ownership.Lane, error) {
			l := &fakeLane{
				lease: lease, stopped: make(chan struct{}), fenced: make(chan struct{}), ended: make(chan struct{}), waits: d.waits,
			}
			d.started <- l
			return l, nil
		},
	})
	go func() {
		defer close(d.done)
		driver.Run(context.Background())
	}()
	return d
}

// step makes the Driver step, and returns once that step is done: the
// Driver takes a tick only between steps.
func (d *driven) step() {
	d.ticks <- time.Time{}
	d.ticks <- time.Time{}
}

func (d *driven) member(t *testing.T, name string) *ownership.Coordinator {
	t.Helper()
	co, err := ownership.New(d.store.Memory, ownership.Config{Member: name, Lanes: 4, Lease: 3 * time.Second, Now: d.clock.now})
	require.NoError(t, err)
	return co
}

// takeAll receives the four lanes a lone member takes at its first step.
func (d *driven) takeAll(t *testing.T) map[int]*fakeLane {
	t.Helper()
	lanes := map[int]*fakeLane{}
	for range 4 {
		l := <-d.started
		assert.Equal(t, uint64(1), l.lease.Epoch, "lane %d: the first take", l.lease.Lane)
		assert.True(t, l.lease.Held(), "lane %d", l.lease.Lane)
		lanes[l.lease.Lane] = l
	}
	require.Len(t, lanes, 4)
	return lanes
}

// A lone member takes and consumes every lane; when a second member
// joins, the lanes it should own are drained first and only then given
// back (the other takes none before), and the other takes them at its
// next step; a member that leaves drains the rest and gives them back at
// once, and its member lease too.
func TestDriverTakesGivesAfterDrainAndLeaves(t *testing.T) {
	t.Parallel()
	d := drive(t, false)
	lanes := d.takeAll(t)

	b := d.member(t, "b")
	plan, err := b.Step(context.Background())
	require.NoError(t, err)
	require.Empty(t, plan.Taken, "a holds every lane")
	d.step() // a sees b: it drains b's share
	want := ownership.Assign([]string{"a", "b"}, 4)
	var toB []int
	for n, m := range want {
		if m == "b" {
			toB = append(toB, n)
			<-lanes[n].stopped
		}
	}
	require.Len(t, toB, 2)
	d.step()
	plan, err = b.Step(context.Background())
	require.NoError(t, err)
	assert.Empty(t, plan.Taken, "not given back while it drains")
	for _, n := range toB {
		assert.Equal(t, "a", d.store.owner(t, "lane."+strconv.Itoa(n)))
	}

	for _, n := range toB {
		close(lanes[n].ended) // drained
		assert.Equal(t, "lane."+strconv.Itoa(n), <-d.store.released)
	}
	plan, err = b.Step(context.Background())
	require.NoError(t, err)
	require.Len(t, plan.Taken, 2)
	for _, n := range toB {
		assert.Equal(t, uint64(2), plan.Taken[n], "lane %d: b's take, after a's", n)
	}
	select {
	case l := <-d.started:
		t.Fatalf("lane %d consumed again by a", l.lease.Lane)
	default:
	}

	for n, l := range lanes { // a's own share ends as soon as it is stopped
		if want[n] == "a" {
			close(l.ended)
		}
	}
	close(d.stop)
	<-d.done
	for n, l := range lanes {
		if want[n] == "a" {
			<-l.stopped
			assert.Empty(t, d.store.owner(t, "lane."+strconv.Itoa(n)), "lane %d given back", n)
		}
	}
	plan, err = b.Step(context.Background())
	require.NoError(t, err)
	assert.Len(t, plan.Taken, 2, "a's lanes are b's at once, not after the lease")
	assert.Equal(t, 1, plan.Members, "a left")
}

// A lane whose lease ran out unrenewed (the store was unreachable) is
// fenced, and consumed again only once it has ended and the lease is
// renewed.
func TestDriverFencesALaneUnrenewed(t *testing.T) {
	t.Parallel()
	d := drive(t, false)
	lanes := d.takeAll(t)
	down := errors.New("down")
	d.store.fail.Store(&down)
	d.clock.add(2600 * time.Millisecond) // past Lease-Margin
	d.step()
	assert.Equal(t, ownership.NotRenewed, <-d.trouble)
	for _, l := range lanes {
		<-l.fenced
		assert.False(t, l.lease.Held())
	}
	d.store.fail.Store(nil)
	d.step() // renewed, but the fenced lanes have not ended
	select {
	case l := <-d.started:
		t.Fatalf("lane %d consumed again before its fenced consumer ended", l.lease.Lane)
	default:
	}
	for _, l := range lanes {
		close(l.ended)
	}
	d.step()
	again := d.takeAll(t)
	for _, l := range again {
		close(l.ended)
	}
	close(d.stop)
	<-d.done
}

// A killed member gives nothing back: its lanes go to the others when
// their leases run out.
func TestDriverKilledGivesNothingBack(t *testing.T) {
	t.Parallel()
	d := drive(t, true)
	lanes := d.takeAll(t)
	for _, l := range lanes {
		close(l.ended)
	}
	close(d.kill)
	<-d.done
	for n := range lanes {
		assert.Equal(t, "a", d.store.owner(t, "lane."+strconv.Itoa(n)))
	}
}

// A lane fenced, whose lease is renewed before its consumer has ended,
// and that another member should now own, is given back only once that
// consumer has ended: its handlers must not overlap the next owner's.
func TestDriverGivesAFencedLaneBackOnceEnded(t *testing.T) {
	t.Parallel()
	d := drive(t, false)
	lanes := d.takeAll(t)
	down := errors.New("down")
	d.store.fail.Store(&down)
	d.clock.add(2600 * time.Millisecond) // past Lease-Margin
	d.step()
	assert.Equal(t, ownership.NotRenewed, <-d.trouble)
	for _, l := range lanes {
		<-l.fenced
	}
	d.store.fail.Store(nil)
	d.step() // renewed; the fenced lanes still run

	b := d.member(t, "b")
	_, err := b.Step(context.Background())
	require.NoError(t, err)
	want := ownership.Assign([]string{"a", "b"}, 4)
	d.step()      // a sees b: it gives b's share up
	for range 2 { // the Driver waits for each fenced consumer of b's share ...
		select {
		case name := <-d.store.released:
			t.Fatalf("%s given back while its fenced consumer still runs", name)
		case n := <-d.waits:
			assert.Equal(t, "b", want[n], "lane %d waited for", n)
		}
	}
	for n, l := range lanes { // ... and gives it back once it has ended
		if want[n] == "b" {
			select {
			case name := <-d.store.released:
				t.Fatalf("%s given back while its fenced consumer still runs", name)
			default:
			}
			close(l.ended)
			assert.Equal(t, "lane."+strconv.Itoa(n), <-d.store.released)
			assert.Empty(t, d.store.owner(t, "lane."+strconv.Itoa(n)))
		}
	}
	for n, l := range lanes {
		if want[n] == "a" {
			close(l.ended)
		}
	}
	close(d.stop)
	<-d.done
}

// A lane lost while it is drained still runs, and may still hand a
// message over to the set's channel: the Driver ends, and closes that
// channel, only once the lane has ended.
func TestDriverEndsOnceALaneLostWhileDrainedHasEnded(t *testing.T) {
	t.Parallel()
	d := drive(t, false)
	lanes := d.takeAll(t)
	b := d.member(t, "b")
	_, err := b.Step(context.Background())
	require.NoError(t, err)
	want := ownership.Assign([]string{"a", "b"}, 4)
	d.step() // a sees b: it drains b's share
	for range 2 {
		n := <-d.waits
		require.Equal(t, "b", want[n], "lane %d drained", n)
		<-lanes[n].stopped
	}

	d.clock.add(3*time.Second + time.Millisecond) // a's leases ran out
	plan, err := b.Step(context.Background())
	require.NoError(t, err)
	require.Len(t, plan.Taken, 4, "b takes every lane, a's lease too ran out")
	d.step() // a finds every lane lost, b's share among them still drained
	for n, l := range lanes {
		if want[n] == "a" {
			<-l.fenced
			close(l.ended)
		}
	}

	close(d.stop)
	for waited := false; !waited; {
		select {
		case <-d.done:
			t.Fatal("the Driver ended, its channel closed, while a lane lost as it drained still ran")
		case n := <-d.waits:
			waited = want[n] == "b"
		}
	}
	for n, l := range lanes {
		if want[n] == "b" {
			close(l.ended)
		}
	}
	<-d.done
	assert.Empty(t, d.store.released, "nothing given back: every lane was lost")
}

// A lane lost while it is drained, and taken again before that drain has
// ended, is not consumed twice: it is consumed again once the drain ends.
func TestDriverConsumesALaneLostWhileDrainedOnceEnded(t *testing.T) {
	t.Parallel()
	d := drive(t, false)
	lanes := d.takeAll(t)
	b := d.member(t, "b")
	_, err := b.Step(context.Background())
	require.NoError(t, err)
	want := ownership.Assign([]string{"a", "b"}, 4)
	d.step() // a sees b: it drains b's share
	for n, l := range lanes {
		if want[n] == "b" {
			<-l.stopped
		}
	}
	d.clock.add(3*time.Second + time.Millisecond) // a's leases ran out
	plan, err := b.Step(context.Background())
	require.NoError(t, err)
	require.Len(t, plan.Taken, 4)
	d.step() // a finds every lane lost
	for n, l := range lanes {
		if want[n] == "a" {
			<-l.fenced
			close(l.ended)
		}
	}

	require.NoError(t, b.Leave(context.Background())) // b gives every lane back
	d.step()                                          // a, alone again, takes them all
	for range 2 {
		l := <-d.started
		assert.Equal(t, "a", want[l.lease.Lane], "lane %d consumed again while its drain still runs", l.lease.Lane)
		close(l.ended)
	}
	select {
	case l := <-d.started:
		t.Fatalf("lane %d consumed again while its drain still runs", l.lease.Lane)
	default:
	}

	for n, l := range lanes {
		if want[n] == "b" {
			close(l.ended)
		}
	}
	for range 2 { // the drains end, and the next steps consume b's share again
		var l *fakeLane
		for l == nil {
			d.step()
			select {
			case l = <-d.started:
			default:
			}
		}
		assert.Equal(t, "b", want[l.lease.Lane])
		assert.Equal(t, uint64(3), l.lease.Epoch, "lane %d: a's take after b's", l.lease.Lane)
		close(l.ended)
	}
	assert.Empty(t, d.store.released, "a drain of a lane lost gives nothing back")
	close(d.stop)
	<-d.done
}
