package fxbus

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/internal/deadline"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Module joins the mediator to a Watermill broker. It takes the routes
// ([Route]) and subscriptions ([Subscribe]) registered with fx, an
// optional message.Publisher and message.Subscriber (provide the broker's
// as these interfaces, with fx.As; with neither, the in-process broker is
// used and a warning says it is not durable), an optional *zap.Logger, an
// optional [Marshaler], an optional [Clock], and optional [Tenants]
// (provided as that interface; without them a message that names a tenant
// is dead-lettered), and an optional [Limiter] for the subscriptions'
// rate limits (fxoutbox.NewSharedLimiter's, for one budget across
// replicas). It provides the
// fxcqrs.Forwarder that fxcqrs.Module takes, so routed events leave
// through it; a module above it (the outbox's) may decorate that
// Forwarder to take routed events another way.
//
// fx.Start provisions the topics the routes, subscriptions and dead letters
// declare, on a broker that provisions ([Provisioner]), before any module
// that needs the bus starts (the outbox's relay publishes through it);
// then, after the mediator, it starts consuming the subscribed topics and
// returns once the router runs. A broker that refuses a subscription fails
// fx.Start with its reason in the error; its OnStop hook, which runs before the mediator's, stops
// consuming after the messages in flight finished, within a third of fx's
// stop deadline, so that the mediator and the relay after it keep theirs.
//
// fx.New fails, naming the culprit, for a route without a publisher, a
// subscription without a subscriber, two routes of one type to one topic,
// two types with one name on the wire, an empty topic, or a topic the
// broker does not take (its [Broker.CheckTopic] rule).
var Module = fx.Module("fxbus",
	fx.Provide(
		provideBus,
		func(b *Bus) fxcqrs.Forwarder { return b },
	),
	fxcqrs.AsChecks(func(b *Bus) []fxcqrs.Check { return b.Checks() }),
	fx.Invoke(startBus),
)

// Clock is the bus's clock under fx ([Config].Now): the time a
// message's deliver-by counts from and is judged by. fxbus.Module takes
// one from the graph, optional (default time.Now). fxoutbox.Module
// provides the outbox's (fxoutbox.Config.Now) as the bus's Clock, so that
// an application with the outbox gives its clock, a test its fake clock,
// once, in fxoutbox.Config.Now (which the sagas' fxsaga.SQLStore and
// runner take too): supply a Clock only without the outbox.
type Clock func() time.Time

type busParams struct {
	fx.In

	Publisher     message.Publisher  `optional:"true"`
	Subscriber    message.Subscriber `optional:"true"`
	Logger        *zap.Logger        `optional:"true"`
	Marshaler     Marshaler          `optional:"true"`
	Clock         Clock              `optional:"true"`
	Routes        []Routing          `group:"fxbus.routes"`
	Subscriptions []Subscription     `group:"fxbus.subscriptions"`
	Propagators   []Propagator       `group:"fxbus.propagators"`
	Upcasters     []Upcaster         `group:"fxbus.upcasters"`
	Tracer        Tracer             `optional:"true"`
	DeadLetters   DeadLetterRecorder `optional:"true"`
	Tenants       Tenants            `optional:"true"`
	Limiter       Limiter            `optional:"true"`
	Lifecycle     fx.Lifecycle
}

func provideBus(p busParams) (*Bus, error) {
	b, err := newBus(p)
	if err != nil {
		return nil, err
	}
	// Provisioning is a hook of its own, appended as the bus is made: before
	// the hooks of whatever needs the bus (the outbox's relay, which
	// publishes), so that they find its topics made.
	p.Lifecycle.Append(fx.Hook{OnStart: b.Provision})
	return b, nil
}

func newBus(p busParams) (*Bus, error) {
	cfg := Config{
		Publisher:   p.Publisher,
		Subscriber:  p.Subscriber,
		Logger:      p.Logger,
		Marshaler:   p.Marshaler,
		Propagators: p.Propagators,
		Tracer:      p.Tracer,
		DeadLetters: p.DeadLetters,
		Upcasters:   p.Upcasters,
		Tenants:     p.Tenants,
		Now:         p.Clock,
		Limiter:     p.Limiter,
	}
	return New(cfg, p.Routes, p.Subscriptions)
}

// startBus ties the bus to the lifecycle. It depends on the mediator, so
// its hooks are appended after the mediator's: fx starts the bus after the
// mediator and stops it before.
func startBus(lc fx.Lifecycle, b *Bus, m *fxcqrs.Mediator) {
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error { return b.Start(ctx, m) },
		// A third of the stop deadline: the mediator and the relay stop
		// after the bus and need theirs.
		OnStop: func(ctx context.Context) error {
			ctx, cancel := deadline.Share(ctx, 1.0/3)
			defer cancel()
			return b.Stop(ctx)
		},
	})
}
