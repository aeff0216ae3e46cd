// Command bus runs two services, orders and billing, in one program,
// exchanging events through a message broker with fxbus:
//
//	orders:  PlaceOrder  → emits OrderPlaced      → routed to "orders"
//	billing: OrderPlaced → charges, emits PaymentReceived → routed to "payments"
//	orders:  PaymentReceived → marks the order paid
//
// By default the broker is an in-process Watermill GoChannel, which is not
// durable and needs no server:
//
//	go run ./examples/bus
//	go run ./examples/bus -broker nats -nats nats://127.0.0.1:4222
//	go run ./examples/bus -broker amqp -amqp amqp://guest:guest@127.0.0.1:5672/
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/nats-io/nats.go"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/fx"
)

// The events on the wire, as both services know them.
type (
	// PlaceOrder is the orders service's command.
	PlaceOrder struct{ ID int }
	// OrderPlaced leaves the orders service on "orders".
	OrderPlaced struct {
		ID     int `json:"id"`
		Amount int `json:"amount"`
	}
	// PaymentReceived leaves the billing service on "payments".
	PaymentReceived struct {
		OrderID int `json:"orderId"`
		Amount  int `json:"amount"`
	}
)

// log prints the timeline, one line at a time.
type log struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *log) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", args...)
}

// broker is each service's broker, as one fx option: a preset's module,
// or the in-process GoChannel that both services share.
type broker func(service string) fx.Option

func goChannel() (broker, func() error) {
	gc := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 16}, watermill.NopLogger{})
	return func(string) fx.Option {
		return fx.Supply(fx.Annotate(gc, fx.As(new(message.Publisher))), fx.Annotate(gc, fx.As(new(message.Subscriber))))
	}, gc.Close
}

func natsBroker(url string) broker {
	return func(service string) fx.Option {
		// The bus's own JetStream publisher and subscriber: manual acks,
		// the service's durable consumer per topic, message-id
		// deduplication (see fxbus/natsjs). Closed when the app stops.
		return natsjs.Module(natsjs.Config{URL: url, Group: service})
	}
}

func amqpBroker(url string) broker {
	return func(service string) fx.Option {
		// The bus's RabbitMQ preset: publisher confirms on pooled
		// channels, a durable queue per service (see fxbus/amqpbus).
		return amqpbus.Module(amqpbus.Config{URL: url, Group: service})
	}
}

// service starts one fx application over the broker.
func service(ctx context.Context, name string, b broker, opts ...fx.Option) (*fx.App, *fxcqrs.Mediator, error) {
	var m *fxcqrs.Mediator
	app := fx.New(append([]fx.Option{
		fx.NopLogger,
		fxcqrs.Module,
		fxbus.Module,
		b(name),
		fx.Populate(&m),
	}, opts...)...)
	if err := app.Start(ctx); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return app, m, nil
}

type eventFunc[E any] func(context.Context, E) error

func (f eventFunc[E]) Handle(ctx context.Context, e E) error { return f(ctx, e) }

type commandFunc[C any] func(context.Context, C) error

func (f commandFunc[C]) Handle(ctx context.Context, c C) error { return f(ctx, c) }

// run places one order and returns once the payment came back.
func run(ctx context.Context, w io.Writer, b broker, suffix string) error {
	l := &log{w: w}
	orders, payments := "orders"+suffix, "payments"+suffix
	paid := make(chan struct{})
	var placedID, placedCorrelation string

	// snippet:billing
	billingApp, _, err := service(ctx, "billing", b,
		fxbus.Subscribe[OrderPlaced](orders),
		fxbus.Route[PaymentReceived](payments),
		fxcqrs.AsEventHandler(func() eventFunc[OrderPlaced] {
			return func(ctx context.Context, e OrderPlaced) error {
				placedID, placedCorrelation = fxbus.MessageID(ctx), fxbus.CorrelationID(ctx)
				l.printf("billing  received OrderPlaced %d over the broker; charging %d", e.ID, e.Amount)
				fxcqrs.Emit(ctx, PaymentReceived{OrderID: e.ID, Amount: e.Amount})
				return nil
			}
		}),
	)
	// end snippet
	if err != nil {
		return err
	}
	defer billingApp.Stop(context.Background()) //nolint:errcheck // the run's error matters more

	ordersApp, ordersM, err := service(ctx, "orders", b,
		fxbus.Route[OrderPlaced](orders),
		fxbus.Subscribe[PaymentReceived](payments),
		fxcqrs.AsCommandHandler(func() commandFunc[PlaceOrder] {
			return func(ctx context.Context, c PlaceOrder) error {
				l.printf("orders   PlaceOrder %d handled; OrderPlaced emitted", c.ID)
				fxcqrs.Emit(ctx, OrderPlaced{ID: c.ID, Amount: 120})
				return nil
			}
		}),
		fxcqrs.AsEventHandler(func() eventFunc[PaymentReceived] {
			return func(ctx context.Context, e PaymentReceived) error {
				l.printf("orders   received PaymentReceived for order %d over the broker: order paid", e.OrderID)
				l.printf("         one correlation id across both services: %v; caused by the OrderPlaced message: %v",
					fxbus.CorrelationID(ctx) == placedCorrelation, fxbus.CausationID(ctx) == placedID)
				close(paid)
				return nil
			}
		}),
	)
	if err != nil {
		return err
	}
	defer ordersApp.Stop(context.Background()) //nolint:errcheck // the run's error matters more

	if err := fxcqrs.Exec(ctx, ordersM, PlaceOrder{ID: 42}); err != nil {
		return err
	}
	select {
	case <-paid:
		l.printf("done: the order went out and its payment came back, through the broker")
		return nil
	case <-ctx.Done():
		return errors.New("no payment came back: " + ctx.Err().Error())
	}
}

// removeStreams deletes the JetStream streams the run made, so that a
// shared server keeps nothing of it. A stream is named after its topic
// today; natsjs may map topics to other names (issue 40).
func removeStreams(url string, topics ...string) {
	nc, err := nats.Connect(url)
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return
	}
	for _, t := range topics {
		_ = js.DeleteStream(t)
	}
}

// removeQueues deletes the run's queues (topic to group) and the topics'
// exchanges, so that a shared RabbitMQ keeps nothing of it.
func removeQueues(url string, queues map[string]string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close() //nolint:errcheck // a clean-up
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close() //nolint:errcheck // a clean-up
	for topic, group := range queues {
		_, _ = ch.QueueDelete(topic+"_"+group, false, false, false)
		_ = ch.ExchangeDelete(topic, false, false)
	}
}

func main() {
	kind := flag.String("broker", "gochannel", "gochannel (in-process, not durable), nats or amqp")
	natsURL := flag.String("nats", "nats://127.0.0.1:4222", "NATS JetStream URL, with -broker nats")
	amqpURL := flag.String("amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL, with -broker amqp")
	flag.Parse()

	var b broker
	suffix := ""
	switch strings.ToLower(*kind) {
	case "gochannel":
		var closeIt func() error
		b, closeIt = goChannel()
		defer closeIt() //nolint:errcheck // exiting
		fmt.Println("broker: in-process GoChannel (not durable; use -broker nats or -broker amqp for a real one)")
	case "nats":
		b = natsBroker(*natsURL)
		suffix = fmt.Sprintf("_%d", time.Now().UnixNano())
		fmt.Println("broker: NATS JetStream at", *natsURL)
	case "amqp":
		b = amqpBroker(*amqpURL)
		suffix = fmt.Sprintf("_%d", time.Now().UnixNano())
		fmt.Println("broker: RabbitMQ at", *amqpURL)
	default:
		fmt.Fprintln(os.Stderr, "bus: -broker must be gochannel, nats or amqp")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, os.Stdout, b, suffix)
	switch *kind {
	case "nats":
		removeStreams(*natsURL, "orders"+suffix, "payments"+suffix)
	case "amqp":
		// amqpbus names a service's queue topic_group.
		removeQueues(*amqpURL, map[string]string{"orders" + suffix: "billing", "payments" + suffix: "orders"})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bus:", err)
		os.Exit(1)
	}
}
