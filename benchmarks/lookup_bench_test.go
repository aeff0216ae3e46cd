package benchmarks

import (
	"context"
	"fmt"
	"testing"

	"github.com/fxcqrs/fxcqrs"
)

// Ten digit types; Msg[A, B, C, D] over them makes 10,000 distinct message
// types, each with its own handler type, without generating code.
type (
	d0 struct{}
	d1 struct{}
	d2 struct{}
	d3 struct{}
	d4 struct{}
	d5 struct{}
	d6 struct{}
	d7 struct{}
	d8 struct{}
	d9 struct{}
)

// Msg is one of 10,000 message types.
type Msg[A, B, C, D any] struct{ ID int }

// MsgHandler handles Msg[A, B, C, D].
type MsgHandler[A, B, C, D any] struct{}

func (MsgHandler[A, B, C, D]) Handle(context.Context, Msg[A, B, C, D]) error { return nil }

func digits1[A, B, C any](hs *[]any) {
	*hs = append(*hs,
		MsgHandler[A, B, C, d0]{}, MsgHandler[A, B, C, d1]{}, MsgHandler[A, B, C, d2]{}, MsgHandler[A, B, C, d3]{},
		MsgHandler[A, B, C, d4]{}, MsgHandler[A, B, C, d5]{}, MsgHandler[A, B, C, d6]{}, MsgHandler[A, B, C, d7]{},
		MsgHandler[A, B, C, d8]{}, MsgHandler[A, B, C, d9]{})
}

func digits2[A, B any](hs *[]any) {
	digits1[A, B, d0](hs)
	digits1[A, B, d1](hs)
	digits1[A, B, d2](hs)
	digits1[A, B, d3](hs)
	digits1[A, B, d4](hs)
	digits1[A, B, d5](hs)
	digits1[A, B, d6](hs)
	digits1[A, B, d7](hs)
	digits1[A, B, d8](hs)
	digits1[A, B, d9](hs)
}

func digits3[A any](hs *[]any) {
	digits2[A, d0](hs)
	digits2[A, d1](hs)
	digits2[A, d2](hs)
	digits2[A, d3](hs)
	digits2[A, d4](hs)
	digits2[A, d5](hs)
	digits2[A, d6](hs)
	digits2[A, d7](hs)
	digits2[A, d8](hs)
	digits2[A, d9](hs)
}

// manyHandlers returns 10,000 command handlers of distinct types; the
// first is the handler of Msg[d0, d0, d0, d0].
func manyHandlers() []any {
	hs := make([]any, 0, 10000)
	digits3[d0](&hs)
	digits3[d1](&hs)
	digits3[d2](&hs)
	digits3[d3](&hs)
	digits3[d4](&hs)
	digits3[d5](&hs)
	digits3[d6](&hs)
	digits3[d7](&hs)
	digits3[d8](&hs)
	digits3[d9](&hs)
	return hs
}

// BenchmarkLookup: Exec of one command type while 10, 1,000 and 10,000
// types are registered. The cost must not grow with the registry.
func BenchmarkLookup(b *testing.B) {
	ctx := context.Background()
	all := manyHandlers()
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("types=%d", n), func(b *testing.B) {
			m := newMediator(b, fxcqrs.Config{}, fxcqrs.WithCommandHandlers(all[:n]...))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := fxcqrs.Exec(ctx, m, Msg[d0, d0, d0, d0]{ID: i}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestManyHandlersAreDistinct(t *testing.T) {
	m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithCommandHandlers(manyHandlers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background()) //nolint:errcheck // nothing in flight
	if err := fxcqrs.Exec(context.Background(), m, Msg[d9, d9, d9, d9]{}); err != nil {
		t.Fatal(err)
	}
}
