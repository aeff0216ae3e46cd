package ownership

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
)

// Lane is one lane a Driver consumes, as its broker consumes it (a NATS
// durable consumer, a Redis stream's consumer name, a RabbitMQ queue of a
// single active consumer). The Driver calls it from its own goroutine,
// except Stop and Wait for a lane given up, which it calls from one of
// the lane's.
type Lane interface {
	// Fence stops consuming the lane at once and gives nothing back: the
	// lane may be another member's already. It must not wait on the
	// broker, for the other lanes' leases are renewed by the same loop.
	Fence()
	// Fenced is closed once a fenced lane has ended: the Driver does not
	// consume the lane again until then.
	Fenced() <-chan struct{}
	// Stop stops consuming the lane to give it back: what it holds goes
	// back to the broker once its handlers are done. It may wait on the
	// broker.
	Stop()
	// Wait returns once the lane, stopped or fenced, has ended: its
	// handlers are done.
	Wait()
}

// Trouble is what went wrong in a Driver's loop, for its broker to log
// in its own words (docs/troubleshooting.md names each broker's).
type Trouble int

const (
	// NotRenewed is a step that failed: the leases were not renewed, and
	// the lanes held count as held until their lease runs out.
	NotRenewed Trouble = iota
	// NotStarted is a lane held that could not be consumed (Start
	// failed); it is tried again at the next step.
	NotStarted
	// NotGivenBack is a lane given up and drained, not given back; it
	// goes to its next owner when its lease runs out.
	NotGivenBack
	// NotLeft is a member leaving that did not give its lanes back; they
	// go to the others when their leases run out.
	NotLeft
)

// DriverConfig is what a Driver needs of its broker.
type DriverConfig struct {
	// Warn logs trouble, of lane (-1 for none) with its cause. Required.
	Warn func(trouble Trouble, lane int, err error)
	// Start consumes the lane of lease, whose lease this member took with
	// lease.Epoch: whatever its previous owner held and did not settle
	// must come first. An error is logged, and Start is called again at
	// the next step. Required.
	Start func(lease fxbus.LaneLease) (Lane, error)
	// Flush, when set, is called after a lane given up has ended and
	// before this member leaves, so that what was given back reaches the
	// broker before the lease does.
	Flush func()
	// Stop, when closed, ends the Driver as its context does. Optional.
	Stop <-chan struct{}
	// Kill, when closed, ends the Driver as a killed process ends, for
	// the tests: nothing is given back, and Run returns once Stop is
	// closed too. Optional.
	Kill <-chan struct{}
	// Out, when set, is the channel the lanes hand their messages over
	// to: Run closes it once every lane has ended.
	Out chan *message.Message
	// Ticks, when set, paces the steps in place of a ticker of Lease/6 (at
	// least 10ms): an injectable clock for the tests.
	Ticks <-chan time.Time
}

// Driver is a member's loop over its lanes: it steps the Coordinator
// every Lease/6, consumes the lanes taken (Start), fences those lost or
// whose lease ran out unrenewed, drains the lanes to give up and only
// then gives their leases back, and, when it ends, drains every lane and
// leaves. Each broker brings only how a lane is consumed (a Lane).
type Driver struct {
	co       *Coordinator
	cfg      DriverConfig
	given    chan int // a lane's drain has ended: release its lease, if it is still to give
	epochs   map[int]uint64
	lanes    map[int]Lane // the lanes consumed
	giving   map[int]bool // to be released once drained
	stopping map[int]Lane // fenced, still settling: not consumed again until they end
	// draining are the drains under way (a nil Lane: nothing to drain),
	// each until its lane has ended and its goroutine has said so on
	// given. Kept apart from giving, which a lane lost meanwhile leaves:
	// its lane still runs and still hands messages over to Out, so it is
	// not consumed again, and Run does not close Out, before it has ended.
	draining map[int]Lane
}

// NewDriver returns the Driver of co's lanes.
func NewDriver(co *Coordinator, cfg DriverConfig) *Driver {
	return &Driver{
		co: co, cfg: cfg, given: make(chan int, co.cfg.Lanes), epochs: map[int]uint64{},
		lanes: map[int]Lane{}, giving: map[int]bool{}, stopping: map[int]Lane{}, draining: map[int]Lane{},
	}
}

// Run steps the lanes' ownership until ctx ends, Stop is closed or Kill
// is; then it drains every lane and, unless killed, gives the leases
// back. It returns once every lane has ended, and Out is closed.
func (d *Driver) Run(ctx context.Context) {
	if d.cfg.Out != nil {
		defer close(d.cfg.Out)
	}
	ticks := d.cfg.Ticks
	if ticks == nil {
		tick := time.NewTicker(max(d.co.cfg.Lease/6, 10*time.Millisecond))
		defer tick.Stop()
		ticks = tick.C
	}
	d.step()
	for {
		select {
		case <-ticks:
			d.step()
		case n := <-d.given:
			d.release(n)
		case <-ctx.Done():
			d.leave(true)
			return
		case <-d.cfg.Stop:
			d.leave(true)
			return
		case <-d.cfg.Kill:
			if d.cfg.Stop != nil {
				<-d.cfg.Stop
			}
			d.leave(false)
			return
		}
	}
}

// step renews the leases and follows the plan: it fences the lanes lost,
// drains those to give up, and consumes those held and not consumed.
func (d *Driver) step() {
	plan, err := d.co.Step(context.Background())
	if err != nil {
		d.cfg.Warn(NotRenewed, -1, err)
	}
	for _, n := range plan.Lost {
		d.fence(n)
		delete(d.epochs, n)
		delete(d.giving, n)
	}
	for n, epoch := range plan.Taken {
		d.epochs[n] = epoch
	}
	for _, n := range plan.Give {
		if d.giving[n] {
			continue
		}
		d.giving[n] = true
		if _, ok := d.draining[n]; ok {
			continue // lost while it drained and taken again since: released once that drain ends
		}
		l, fenced := d.lanes[n], false
		delete(d.lanes, n)
		if l == nil {
			// Fenced and still settling: its handlers may still run, so
			// its lease is not given back before it has ended. The
			// reference is taken here, for the maps are this goroutine's.
			l, fenced = d.stopping[n], true
		}
		d.draining[n] = l
		go func() { // drained once its handlers are done, then released
			if l != nil {
				if !fenced { // a fenced lane gives nothing back: it only ends
					l.Stop()
				}
				l.Wait()
				if d.cfg.Flush != nil {
					d.cfg.Flush()
				}
			}
			d.given <- n
		}()
	}
	for n, l := range d.stopping {
		select {
		case <-l.Fenced():
			delete(d.stopping, n)
		default:
		}
	}
	for n, epoch := range d.epochs {
		l := d.lanes[n]
		_, drained := d.draining[n]
		switch {
		case d.giving[n]:
		case l != nil && !d.co.Held(n):
			d.fence(n) // the lease ran out unrenewed: consumed again once renewed
		case l == nil && d.co.Held(n) && d.stopping[n] == nil && !drained:
			d.start(n, epoch)
		}
	}
}

func (d *Driver) start(n int, epoch uint64) {
	l, err := d.cfg.Start(fxbus.LaneLease{Lane: n, Epoch: epoch, Held: func() bool { return d.co.Held(n) }})
	if err != nil {
		d.cfg.Warn(NotStarted, n, err)
		return
	}
	d.lanes[n] = l
}

// fence stops consuming lane n at once, giving nothing back, and does not
// consume it again until it has ended.
func (d *Driver) fence(n int) {
	l := d.lanes[n]
	if l == nil {
		return
	}
	delete(d.lanes, n)
	l.Fence()
	d.stopping[n] = l
}

// release gives lane n's lease back, drained, unless it was lost while
// it drained.
func (d *Driver) release(n int) {
	delete(d.draining, n)
	if !d.giving[n] {
		return
	}
	delete(d.giving, n)
	delete(d.epochs, n)
	if err := d.co.Release(context.Background(), n); err != nil {
		d.cfg.Warn(NotGivenBack, n, err)
	}
}

// leave ends every lane, waits for their handlers, and gives the leases
// back (unless killed: a killed process gives nothing back).
func (d *Driver) leave(giveBack bool) {
	for _, l := range d.lanes {
		l.Stop()
	}
	for _, l := range d.lanes {
		l.Wait()
	}
	for _, l := range d.stopping {
		l.Wait()
	}
	for _, l := range d.draining { // lost meanwhile or not, they still hand over to Out
		if l != nil {
			l.Wait()
		}
	}
	for len(d.draining) > 0 { // and their goroutines have flushed
		n := <-d.given
		if giveBack {
			d.release(n)
		} else {
			delete(d.draining, n)
			delete(d.giving, n)
		}
	}
	if d.cfg.Flush != nil {
		d.cfg.Flush()
	}
	if !giveBack {
		return
	}
	if err := d.co.Leave(context.Background()); err != nil {
		d.cfg.Warn(NotLeft, -1, err)
	}
}

// CancelLane is a Lane consumed under a context of its own: fenced or
// stopped alike, its context is canceled, and it has ended once Ended is
// closed (what it held is settled or back with the broker).
type CancelLane struct {
	Cancel context.CancelFunc
	Ended  <-chan struct{}
}

// Fence cancels the lane's context.
func (l CancelLane) Fence() { l.Cancel() }

// Fenced is Ended.
func (l CancelLane) Fenced() <-chan struct{} { return l.Ended }

// Stop cancels the lane's context.
func (l CancelLane) Stop() { l.Cancel() }

// Wait waits for Ended.
func (l CancelLane) Wait() { <-l.Ended }
