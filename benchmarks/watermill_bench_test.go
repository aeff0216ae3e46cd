package benchmarks

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
)

// The Watermill side uses its in-memory GoChannel pub/sub and JSON
// marshaler, the setup its documentation starts with. The caller waits
// until the handlers have run, as an fxcqrs caller does.

type (
	WMCommand struct{ ID int }
	WMEvent   struct{ ID int }
)

type watermillApp struct {
	pubSub   *gochannel.GoChannel
	router   *message.Router
	cmdBus   *cqrs.CommandBus
	eventBus *cqrs.EventBus
	done     chan struct{}
	cancel   context.CancelFunc
}

func newWatermill(tb testing.TB, eventHandlers int) *watermillApp {
	tb.Helper()
	logger := watermill.NopLogger{}
	app := &watermillApp{
		pubSub: gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, logger),
		done:   make(chan struct{}, 64),
	}
	var err error
	app.router, err = message.NewRouter(message.RouterConfig{}, logger)
	must(tb, err)
	marshaler := cqrs.JSONMarshaler{}

	app.cmdBus, err = cqrs.NewCommandBusWithConfig(app.pubSub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) { return p.CommandName, nil },
		Marshaler:            marshaler,
	})
	must(tb, err)
	cmdProc, err := cqrs.NewCommandProcessorWithConfig(app.router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) {
			return p.CommandName, nil
		},
		SubscriberConstructor: func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return app.pubSub, nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	must(tb, err)
	must(tb, cmdProc.AddHandlers(cqrs.NewCommandHandler("handle", func(context.Context, *WMCommand) error {
		app.done <- struct{}{}
		return nil
	})))

	app.eventBus, err = cqrs.NewEventBusWithConfig(app.pubSub, cqrs.EventBusConfig{
		GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) { return p.EventName, nil },
		Marshaler:            marshaler,
	})
	must(tb, err)
	eventProc, err := cqrs.NewEventProcessorWithConfig(app.router, cqrs.EventProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
			return p.EventName, nil
		},
		SubscriberConstructor: func(cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return app.pubSub, nil
		},
		Marshaler: marshaler,
		Logger:    logger,
	})
	must(tb, err)
	for i := range eventHandlers {
		must(tb, eventProc.AddHandlers(cqrs.NewEventHandler("on-event-"+string(rune('a'+i)), func(context.Context, *WMEvent) error {
			app.done <- struct{}{}
			return nil
		})))
	}

	ctx, cancel := context.WithCancel(context.Background())
	app.cancel = cancel
	go func() { _ = app.router.Run(ctx) }()
	<-app.router.Running()
	tb.Cleanup(func() {
		cancel()
		must(tb, app.router.Close())
		must(tb, app.pubSub.Close())
	})
	return app
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkPeerCommand: a command sent and handled.
func BenchmarkPeerCommand(b *testing.B) {
	ctx := context.Background()
	b.Run("watermill", func(b *testing.B) {
		app := newWatermill(b, 0)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			must(b, app.cmdBus.Send(ctx, &WMCommand{ID: i}))
			<-app.done
		}
	})
	b.Run("fxcqrs", func(b *testing.B) {
		done := make(chan struct{}, 1)
		m := newMediator(b, fxcqrs.Config{}, fxcqrs.WithCommandHandlers(commandFunc[WMCommand](func(context.Context, WMCommand) error {
			done <- struct{}{}
			return nil
		})))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			must(b, fxcqrs.Exec(ctx, m, WMCommand{ID: i}))
			<-done
		}
	})
}

// BenchmarkPeerEvent: an event published to 4 handlers, all of which have
// run when the iteration ends.
func BenchmarkPeerEvent(b *testing.B) {
	ctx := context.Background()
	b.Run("watermill", func(b *testing.B) {
		app := newWatermill(b, 4)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			must(b, app.eventBus.Publish(ctx, &WMEvent{ID: i}))
			for range 4 {
				<-app.done
			}
		}
	})
	b.Run("fxcqrs", func(b *testing.B) {
		done := make(chan struct{}, 4)
		h := func(context.Context, WMEvent) error { done <- struct{}{}; return nil }
		m := newMediator(b, limit(4), fxcqrs.WithEventHandlers(
			eventFunc[WMEvent](h), eventFunc2[WMEvent](h), eventFunc3[WMEvent](h), eventFunc4[WMEvent](h)))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			must(b, fxcqrs.Publish(ctx, m, WMEvent{ID: i}))
			for range 4 {
				<-done
			}
		}
	})
}

type (
	commandFunc[C any] func(context.Context, C) error
	eventFunc[E any]   func(context.Context, E) error
	eventFunc2[E any]  func(context.Context, E) error
	eventFunc3[E any]  func(context.Context, E) error
	eventFunc4[E any]  func(context.Context, E) error
)

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }
func (f eventFunc[E]) Handle(ctx context.Context, e E) error   { return f(ctx, e) }
func (f eventFunc2[E]) Handle(ctx context.Context, e E) error  { return f(ctx, e) }
func (f eventFunc3[E]) Handle(ctx context.Context, e E) error  { return f(ctx, e) }
func (f eventFunc4[E]) Handle(ctx context.Context, e E) error  { return f(ctx, e) }
