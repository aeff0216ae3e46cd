package fxoutbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox/internal/relay"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Durable in-process delivery and scheduled commands: rows of the outbox
// that the relay delivers to this service's own mediator instead of a
// broker. What may be delivered so (the Deliverables), and the mediator
// they run on.

// Deliverable is a message type the relay can deliver to this service's
// mediator from a row: an event whose in-process handlers are durable
// ([DurableEvent]), or a command that may be scheduled
// ([ScheduledCommand]). Give them to [Config].Deliverables, or under fx
// register them with [Durable] and [Schedulable].
type Deliverable struct {
	typ     reflect.Type
	command bool
	run     func(ctx context.Context, m *fxcqrs.Mediator, decode func(into any) error) error
}

// DurableEvent makes the in-process handlers of event type E durable:
// an E emitted under the unit of work is not run from memory after the
// commit but written, in the emitting transaction, as a row that the
// relay (of any replica) delivers to this service's handlers of E after
// the commit. Each handler's effect happens once through the inbox's
// (handler, message id) record, which commits with the handler's own
// writes; a failed handler is retried with a backoff and, after
// DeliveryConfig.MaxAttempts, the row goes to the dead letter table with
// its error. The row is deleted when every handler has it.
//
// What changes for E, against an in-memory event:
//   - the caller does not wait: Exec returns once the transaction has
//     committed, before E's handlers run, and an *EventError cannot
//     report them (the relay logs, retries and dead-letters instead);
//   - an E emitted by a nested call runs after the outer transaction
//     commits, not before the nested call returns;
//   - Config.Events.Sequential orders the in-memory events only: durable
//     ones run when the relay delivers them, several rows at once
//     (DeliveryConfig.Concurrency), each under the mediator's own limit;
//   - a stream's "events before each item" does not hold for E;
//   - an E emitted where no unit of work runs (a stream item) is run
//     from memory, best-effort, as before, and a warning says so once per
//     type: emit it from a command.
//
// "Effect once" covers what a handler writes in the database through
// Tx(ctx), in the transaction that records it. An external side effect (a
// mail, an HTTP call) happens at least once: use fxbus.MessageID(ctx) as
// its idempotency key.
func DurableEvent[E any]() Deliverable {
	return Deliverable{typ: reflect.TypeFor[E](), run: func(ctx context.Context, m *fxcqrs.Mediator, decode func(any) error) error {
		var e E
		if err := decode(&e); err != nil {
			return &relay.PermanentError{Err: err}
		}
		return fxcqrs.Publish(ctx, m, e)
	}}
}

// ScheduledCommand lets commands of type C be scheduled with [Schedule]:
// when due, the relay runs Exec with the command, an ordinary mediator
// call (middleware, unit of work, observer), with the schedule's message
// id as its idempotency key: the inbox records (command handler, message
// id) in the command's transaction, so a redelivered schedule runs it
// once.
func ScheduledCommand[C any]() Deliverable {
	return Deliverable{typ: reflect.TypeFor[C](), command: true, run: func(ctx context.Context, m *fxcqrs.Mediator, decode func(any) error) error {
		var c C
		if err := decode(&c); err != nil {
			return &relay.PermanentError{Err: err}
		}
		return fxcqrs.Exec(ctx, m, c)
	}}
}

// Durable registers [DurableEvent] of E with fxoutbox.Module.
func Durable[E any]() fx.Option { return supplyDeliverable(DurableEvent[E]()) }

// Schedulable registers [ScheduledCommand] of C with fxoutbox.Module.
func Schedulable[C any]() fx.Option { return supplyDeliverable(ScheduledCommand[C]()) }

func supplyDeliverable(d Deliverable) fx.Option {
	return fx.Provide(fx.Annotate(func() Deliverable { return d }, fx.ResultTags(`group:"fxoutbox.deliverables"`)))
}

// DeliveryConfig configures durable in-process delivery and scheduled
// commands: Topic (default "fxcqrs.local"), MaxAttempts (5),
// RetryInitial (1s) and RetryMax (5m) between attempts, Concurrency (8)
// and AllEvents. Every field is optional.
type DeliveryConfig = relay.DeliveryConfig

// MetadataDepth is the metadata key of a durable row's depth: how many
// durable deliveries led to it. A durable handler's durable follow-up is
// one deeper, and one past fxcqrs.MaxDepth is refused, as the mediator
// refuses a runaway chain in memory.
const MetadataDepth = "fxcqrs_depth"

// deliverables is the service's registry of what it delivers to itself.
type deliverables struct {
	events map[reflect.Type]*Deliverable
	byName map[string]*Deliverable
}

func newDeliverables(bus *fxbus.Bus, ds []Deliverable) (deliverables, error) {
	reg := deliverables{events: map[reflect.Type]*Deliverable{}, byName: map[string]*Deliverable{}}
	var errs []error
	for i := range ds {
		d := &ds[i]
		if d.typ == nil {
			errs = append(errs, errors.New("fxoutbox: a zero Deliverable: make it with DurableEvent or ScheduledCommand"))
			continue
		}
		if d.typ.Kind() == reflect.Interface {
			errs = append(errs, fmt.Errorf("fxoutbox: %v is an interface type: a Deliverable names a concrete type", d.typ))
			continue
		}
		name := bus.NameOf(d.typ)
		if other, ok := reg.byName[name]; ok {
			if other.typ == d.typ && other.command == d.command {
				continue // registered twice: harmless
			}
			errs = append(errs, fmt.Errorf("fxoutbox: %v and %v have the same name %q: name one of them with fxbus.Name on its route", other.typ, d.typ, name))
			continue
		}
		reg.byName[name] = d
		if !d.command {
			reg.events[d.typ] = d
		}
	}
	return reg, errors.Join(errs...)
}

func (r deliverables) durable(t reflect.Type) bool { return r.events[t] != nil }

// deliverer runs the rows of the delivery topic on this service's
// mediator: the relay's Local. It knows what is durable (the registry,
// which the unit of work reads too) and the mediator, both given once:
// the registry by New, replaced by DeliverTo with AllEvents, the mediator
// by DeliverTo.
type deliverer struct {
	bus       *fxbus.Bus
	log       *zap.Logger
	topic     string        // DeliveryConfig.Topic
	allEvents bool          // DeliveryConfig.AllEvents
	given     []Deliverable // Config.Deliverables
	reg       atomic.Pointer[deliverables]
	mediator  atomic.Pointer[fxcqrs.Mediator]
}

// newDeliverer returns the deliverer of given (Config.Deliverables),
// registered as reg, to the delivery topic (DeliveryConfig.Topic), with
// DeliveryConfig.AllEvents.
func newDeliverer(bus *fxbus.Bus, log *zap.Logger, topic string, allEvents bool, given []Deliverable, reg deliverables) *deliverer {
	d := &deliverer{bus: bus, log: log, topic: topic, allEvents: allEvents, given: given}
	d.reg.Store(&reg)
	return d
}

// registry is what this service delivers to itself.
func (d *deliverer) registry() *deliverables { return d.reg.Load() }

// Ready reports whether the mediator has been given.
func (d *deliverer) Ready() bool { return d.mediator.Load() != nil }

// Deliver runs one row of the delivery topic on the mediator, as a
// message the bus's Tracer sees processed.
func (d *deliverer) Deliver(ctx context.Context, msgID string, payload []byte, metadata string) (err error) {
	msg := message.NewMessage(msgID, payload)
	if err := json.Unmarshal([]byte(metadata), &msg.Metadata); err != nil {
		return &relay.PermanentError{Err: fmt.Errorf("metadata: %w", err)}
	}
	if err := d.bus.CheckExpiry(msg); err != nil {
		// Before each attempt, as a subscription checks: an expired row
		// is neither delivered nor retried.
		if errors.Is(err, fxbus.ErrExpired) {
			return &relay.ExpiredError{Err: err}
		}
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // PermanentError says "malformed" itself
		}
		return &relay.PermanentError{Err: err}
	}
	if err := d.bus.Upcast(msg); err != nil {
		return &relay.PermanentError{Err: err} // no chain reaches it: retrying cannot help
	}
	name := msg.Metadata.Get(fxbus.MetadataName)
	dv := d.registry().byName[name]
	if dv == nil {
		return &relay.PermanentError{Err: fmt.Errorf("no durable event or scheduled command named %q is registered in this service", name)}
	}
	depth, _ := strconv.Atoi(msg.Metadata.Get(MetadataDepth))
	ctx, end := d.bus.Process(ctx, d.topic, msg)
	defer func() { end(err) }()
	ctx = context.WithValue(ctx, localKey{}, delivery{depth: depth})
	m := d.mediator.Load()
	return dv.run(fxcqrs.Foreground(ctx), m, func(into any) error { return d.bus.Decode(msg.Payload, into) })
}

// deliverTo gives the deliverer its mediator and, with AllEvents, makes
// every concrete event type it handles durable.
func (d *deliverer) deliverTo(m *fxcqrs.Mediator) {
	d.mediator.Store(m)
	if !d.allEvents || m == nil {
		return
	}
	ds := append([]Deliverable(nil), d.given...)
	for _, t := range m.EventTypes() {
		if t.Kind() != reflect.Interface {
			ds = append(ds, dynamicEvent(t))
		}
	}
	reg, err := newDeliverables(d.bus, ds)
	if err != nil {
		// Two handled types with one name: New checked the registered
		// ones; these keep their in-memory delivery.
		d.log.Error("fxoutbox: DeliveryConfig.AllEvents: some event types stay in memory", zap.Error(err))
	}
	d.reg.Store(&reg)
}

// dynamicEvent is DurableEvent of a type known at run time only (see
// DeliveryConfig.AllEvents).
func dynamicEvent(t reflect.Type) Deliverable {
	return Deliverable{typ: t, run: func(ctx context.Context, m *fxcqrs.Mediator, decode func(any) error) error {
		p := reflect.New(t)
		if err := decode(p.Interface()); err != nil {
			return &relay.PermanentError{Err: err}
		}
		return fxcqrs.Publish[any](ctx, m, p.Elem().Interface())
	}}
}

// localKey marks the context of a row's delivery: the unit of work
// records each handler in the inbox, and durable follow-ups are one
// deeper.
type localKey struct{}

type delivery struct{ depth int }

func deliveryOf(ctx context.Context) (delivery, bool) {
	d, ok := ctx.Value(localKey{}).(delivery)
	return d, ok
}

// followUpDepth is the depth of a row written under ctx for this
// service's own delivery (a durable event, a scheduled message): one past
// the row being delivered, if any. Past fxcqrs.MaxDepth it is refused, as
// the mediator refuses a runaway chain in memory.
func followUpDepth(ctx context.Context, msg any) (int, error) {
	depth := 1
	if d, ok := deliveryOf(ctx); ok {
		depth = d.depth + 1
	}
	if depth > fxcqrs.MaxDepth {
		return 0, fmt.Errorf("fxoutbox: %T would be %d deliveries deep: %w", msg, depth, fxcqrs.ErrMaxDepth)
	}
	return depth, nil
}
