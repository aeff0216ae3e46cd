package fxbus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/zap"
)

// Messages that expire: a message worth nothing after a time (a price
// quote, a one-time code) carries that time in its [MetadataDeliverBy]
// metadata, and a subscription that receives it later dead-letters it,
// unhandled, with the reason "expired". The time comes from the route
// ([DeliverWithin]), the call ([WithDeliverBy], [WithDeliverWithin]) or
// the event itself ([Expiring]); the earliest of those given wins.

// ErrExpired is the reason a subscription dead-letters a message it
// received after its deliver-by time ([MetadataDeliverBy]): errors.Is
// reports it for the error a DeadLetterRecorder is given, and the dead
// letter's reason (Watermill's "reason_poisoned" metadata) starts with
// "expired".
var ErrExpired = errors.New("expired")

// expired is the error of a message received after its deliver-by time.
type expired struct{ by, at time.Time }

func (e *expired) Error() string {
	return fmt.Sprintf("expired: to be delivered by %s, received at %s", formatDeliverBy(e.by), formatDeliverBy(e.at))
}

func (e *expired) Is(target error) bool { return target == ErrExpired }

// deliverByLayout is MetadataDeliverBy's layout: RFC 3339 with all nine
// digits of the nanoseconds, so that the times sort as strings.
const deliverByLayout = "2006-01-02T15:04:05.000000000Z07:00"

func formatDeliverBy(t time.Time) string { return t.UTC().Format(deliverByLayout) }

// DeliverWithinOption gives a route's messages a deliver-by time. Make
// one with [DeliverWithin].
type DeliverWithinOption struct{ d time.Duration }

// DeliverWithin gives each message of the route a deliver-by time
// ([MetadataDeliverBy]) d after it is made: when the handler's call
// emitted it (with the outbox: when its unit of work wrote it, not when
// the relay sends it), or, for a message scheduled with the outbox, d
// after its due time. A subscription that receives it later dead-letters
// it with the reason "expired" instead of handling it. d must be
// positive.
func DeliverWithin(d time.Duration) DeliverWithinOption { return DeliverWithinOption{d: d} }

func (o DeliverWithinOption) applyRoute(r *route) { r.within, r.withinSet = o.d, true }

// Expiring is an event that says itself when it is worth nothing, such
// as a quote with its own end of validity: its DeliverBy time, when not
// zero, is the deliver-by time of the messages made of it (the earliest
// wins against a route's or a call's). It is how one emit, among the
// events a handler emits, gets a deliver-by of its own.
type Expiring interface {
	DeliverBy() time.Time
}

// expiryKey is the context key of what a call says of the deliver-by
// times of the messages made under it.
type expiryKey struct{}

// callExpiry is what a context says of the deliver-by times of the
// messages made under it.
type callExpiry struct {
	by     time.Time     // WithDeliverBy: the earliest given; zero: none
	within time.Duration // WithDeliverWithin: the shortest given; 0: none
	due    time.Time     // WithDueTime; zero: the bus's clock's now
}

func expiryOf(ctx context.Context) callExpiry {
	x, _ := ctx.Value(expiryKey{}).(callExpiry)
	return x
}

// WithDeliverBy returns ctx under which every routed message made (the
// events of a Send, Exec or Publish given it, their handlers' follow-ups
// included, or a message scheduled with it) gets the deliver-by time t,
// unless another source gives an earlier one. Given twice, the earlier
// time holds, as a context's deadline does.
//
// An event handler's Emit does not see a context it made: the events of
// a call are made into messages under the call's context. Give one event
// of its own a deliver-by with [Expiring].
//
// A zero t gives no deliver-by: ctx is returned as it is.
func WithDeliverBy(ctx context.Context, t time.Time) context.Context {
	if t.IsZero() {
		return ctx // not "before" every other time: it would erase one given earlier
	}
	x := expiryOf(ctx)
	if x.by.IsZero() || t.Before(x.by) {
		x.by = t
	}
	return context.WithValue(ctx, expiryKey{}, x)
}

// WithDeliverWithin is [WithDeliverBy] with a time d after each message
// is made: after its due time for a message scheduled with the outbox.
// Given twice, the shorter holds. d must be positive; otherwise ctx is
// returned as it is.
func WithDeliverWithin(ctx context.Context, d time.Duration) context.Context {
	if d <= 0 {
		return ctx
	}
	x := expiryOf(ctx)
	if x.within == 0 || d < x.within {
		x.within = d
	}
	return context.WithValue(ctx, expiryKey{}, x)
}

// WithDueTime returns ctx under which the messages the bus makes are due
// at at instead of now: a deliver-by given as a duration ([DeliverWithin],
// [WithDeliverWithin]) counts from at. The outbox's Schedule makes its
// messages under it, so that a scheduled message's deliver-by counts from
// its due time, however late the relay sends it; an application has no
// need of it.
func WithDueTime(ctx context.Context, at time.Time) context.Context {
	x := expiryOf(ctx)
	x.due = at
	return context.WithValue(ctx, expiryKey{}, x)
}

// now is the bus's clock (Config.Now).
func (b *Bus) now() time.Time {
	if b.cfg.Now != nil {
		return b.cfg.Now()
	}
	return time.Now()
}

// deliverBy is the deliver-by time of the message of ev on a route whose
// messages are worth within (0: no limit), under x: the earliest given,
// or zero. A relative time counts from x's due time, which the first
// message that needs it fixes to the bus's now when x has none, so that
// the messages of one call count from one time.
func (b *Bus) deliverBy(x *callExpiry, ev any, within time.Duration) time.Time {
	by := x.by
	earliest := func(t time.Time) {
		if !t.IsZero() && (by.IsZero() || t.Before(by)) {
			by = t
		}
	}
	if e, ok := ev.(Expiring); ok && !isNilPointer(ev) {
		earliest(e.DeliverBy())
	}
	if within > 0 || x.within > 0 {
		if x.due.IsZero() {
			x.due = b.now()
		}
		if within > 0 {
			earliest(x.due.Add(within))
		}
		if x.within > 0 {
			earliest(x.due.Add(x.within))
		}
	}
	return by
}

// stampDeliverBy sets msg's deliver-by metadata to by, or removes it
// when by is zero (msg may be a copy of another route's message).
func stampDeliverBy(msg *message.Message, by time.Time) {
	if by.IsZero() {
		delete(msg.Metadata, MetadataDeliverBy)
		return
	}
	msg.Metadata.Set(MetadataDeliverBy, formatDeliverBy(by))
}

// checkExpiry is a subscription's check before each attempt at msg: an
// error when msg came after its deliver-by time by the bus's clock (a
// deliver-by equal to now is in time), or when its deliver-by cannot be
// read. A replay (MetadataReplay: a repair put the message back) is
// handled whatever its deliver-by: replaying a dead letter is an
// operator's decision to have it handled now.
func (b *Bus) checkExpiry(msg *message.Message) error {
	v := msg.Metadata.Get(MetadataDeliverBy)
	if v == "" || msg.Metadata.Get(MetadataReplay) != "" {
		return nil
	}
	by, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return &malformed{err: fmt.Errorf("the %q metadata is no RFC 3339 time: %w", MetadataDeliverBy, err)}
	}
	if now := b.now(); now.After(by) {
		return &expired{by: by, at: now}
	}
	return nil
}

// StampDeliverBy gives msg, the message [Bus.Encode] made of event under
// ctx, the deliver-by time ([MetadataDeliverBy]) a route without
// [DeliverWithin] would give it: the earliest of ctx's ([WithDeliverBy],
// and [WithDeliverWithin] counted from ctx's [WithDueTime] or else the
// bus's now) and event's own ([Expiring]); none when they give none. It
// is for code that stores messages it delivers to this service itself,
// such as the outbox's durable events and scheduled commands, which no
// route makes.
func (b *Bus) StampDeliverBy(ctx context.Context, msg *message.Message, event any) {
	x := expiryOf(ctx)
	if by := b.deliverBy(&x, event, 0); !by.IsZero() {
		stampDeliverBy(msg, by)
	}
}

// CheckExpiry is the check a subscription makes before each attempt at
// msg, for code that delivers stored messages itself (the outbox's
// durable events and scheduled commands): an error errors.Is reports as
// [ErrExpired] when msg's deliver-by time is before the bus's clock's now
// (its text "expired: to be delivered by …, received at …"), an error
// when its deliver-by cannot be read, and nil when it is in time, has no
// deliver-by, or is a replay ([MetadataReplay]), which is delivered
// whatever its deliver-by.
func (b *Bus) CheckExpiry(msg *message.Message) error { return b.checkExpiry(msg) }

// deadLetterExpired counts and logs, at info level, a message err says
// expired, and reports whether it did: an expired message is the
// outcome its producer asked for, not a fault (Stats.Expired and the
// metrics count them).
func (b *Bus) deadLetterExpired(ts *topicSubs, msg *message.Message, err error) bool {
	if !errors.Is(err, ErrExpired) {
		return false
	}
	b.expired.Add(1)
	b.log.Info("message expired: dead-lettered unhandled",
		zap.String("topic", ts.topic), zap.String("deadLetter", ts.dead), zap.String("messageId", msg.UUID),
		zap.String("deliverBy", msg.Metadata.Get(MetadataDeliverBy)))
	return true
}

// isNilPointer reports whether v is a nil pointer, whose value-receiver
// methods (such as an Expiring's DeliverBy) would panic.
func isNilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
