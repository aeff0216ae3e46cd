package benchmarks

import (
	"context"
	"testing"

	"github.com/fxcqrs/fxcqrs"
)

// DomainEvent is the interface an aggregate's events share.
type DomainEvent interface{ Order() int }

// Order makes Event a DomainEvent.
func (e Event) Order() int { return e.OrderID }

// AuditHandler handles every DomainEvent: a handler of an interface type.
type AuditHandler struct{}

//go:noinline
func (AuditHandler) Handle(context.Context, DomainEvent) error { return nil }

// BenchmarkPolymorphic measures the paths that route by dynamic type,
// against the typed path in the same run: an event published with its
// concrete type to its own handler (the baseline), the same event published
// as a DomainEvent (routed by its dynamic type, called by reflection), and
// the concrete event reaching a handler of the interface it implements.
func BenchmarkPolymorphic(b *testing.B) {
	ctx := context.Background()
	cases := []struct {
		name    string
		handler any
		publish func(m *fxcqrs.Mediator, i int) error
	}{
		{"concrete event, concrete handler", NopEventHandler{}, func(m *fxcqrs.Mediator, i int) error {
			return fxcqrs.Publish(ctx, m, Event{OrderID: i})
		}},
		{"interface-typed event, concrete handler", NopEventHandler{}, func(m *fxcqrs.Mediator, i int) error {
			var e DomainEvent = Event{OrderID: i}
			return fxcqrs.Publish(ctx, m, e)
		}},
		{"concrete event, interface handler", AuditHandler{}, func(m *fxcqrs.Mediator, i int) error {
			return fxcqrs.Publish(ctx, m, Event{OrderID: i})
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			m := newMediator(b, fxcqrs.Config{Events: fxcqrs.EventConfig{Sequential: true}}, fxcqrs.WithEventHandlers(tc.handler))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := tc.publish(m, i); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
