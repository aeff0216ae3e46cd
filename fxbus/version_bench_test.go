package fxbus_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/stretchr/testify/require"
)

// BenchmarkUpcast is a subscribed event's way in, from the message to its
// handler (upcast, name look-up, decoding, the mediator), with a two-step
// upcaster chain against the same event already current, in one run:
// "current" is a version 3 message, "raw" a version 1 message through two
// upcasters on the raw payload, "json" the same through two UpcastJSON
// upcasters (each decodes and encodes the object).
//
//	go test -run '^$' -bench BenchmarkUpcast -benchmem -count 10 . | benchstat -col /chain -
func BenchmarkUpcast(b *testing.B) {
	rename := func(from, to string) func([]byte) ([]byte, error) {
		return func(p []byte) ([]byte, error) { return bytes.Replace(p, []byte(from), []byte(to), 1), nil }
	}
	chains := map[string][]fxbus.Upcaster{
		"raw": {
			{Name: "Placed", From: 1, Up: rename(`"label"`, `"title"`)},
			{Name: "Placed", From: 2, Up: rename(`"cur"`, `"currency"`)},
		},
		"json": {
			fxbus.UpcastJSON("Placed", 1, func(o map[string]any) error { o["title"] = o["label"]; delete(o, "label"); return nil }),
			fxbus.UpcastJSON("Placed", 2, func(o map[string]any) error { o["currency"] = o["cur"]; delete(o, "cur"); return nil }),
		},
	}
	for _, chain := range []string{"current", "raw", "json"} {
		b.Run("chain="+chain, func(b *testing.B) {
			m, err := fxcqrs.New(fxcqrs.Config{}, fxcqrs.WithEventHandlers(
				eventFunc[Placed](func(context.Context, Placed) error { return nil })))
			require.NoError(b, err)
			b.Cleanup(func() { require.NoError(b, m.Stop(context.Background())) })
			ups := chains[chain]
			if ups == nil {
				ups = chains["raw"]
			}
			bus, err := fxbus.New(fxbus.Config{Publisher: failingPublisher{}, Subscriber: noSubscriber{}, Upcasters: ups}, nil,
				[]fxbus.Subscription{fxbus.NewSubscription[Placed]("placed", fxbus.Version(3))})
			require.NoError(b, err)
			handle := fxbus.HandlerForTest(bus, "placed", m)
			payload, version := []byte(`{"id":1,"label":"one","cur":"EUR"}`), "1"
			if chain == "current" {
				payload, version = []byte(`{"id":1,"title":"one","currency":"EUR"}`), "3"
			}
			b.ReportAllocs()
			for b.Loop() {
				msg := message.NewMessage("id", payload)
				msg.Metadata.Set(fxbus.MetadataName, "Placed")
				msg.Metadata.Set(fxbus.MetadataVersion, version)
				if err := handle(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
