// Package preset is what the broker presets' fx modules share: one
// publisher-and-subscriber, made when the graph is built, given to fxbus
// as both, and closed when the application stops.
package preset

import (
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/fx"
)

// PubSub is a preset's publisher and subscriber in one.
type PubSub interface {
	message.Publisher
	message.Subscriber
}

// Module is the fx module named name that provides what newPubSub makes
// as the graph's message.Publisher and message.Subscriber, and *P itself
// for code that needs the preset's own methods. fx.New fails with
// newPubSub's error. The preset is closed on stop, after fxbus has
// stopped consuming: its stop hook is appended when it is made, before
// the bus's hooks, and fx runs stop hooks in reverse.
func Module[P PubSub](name string, newPubSub func() (P, error)) fx.Option {
	return fx.Module(name,
		fx.Provide(
			func(lc fx.Lifecycle) (P, error) {
				p, err := newPubSub()
				if err != nil {
					return p, err
				}
				lc.Append(fx.StopHook(p.Close))
				return p, nil
			},
			func(p P) message.Publisher { return p },
			func(p P) message.Subscriber { return p },
		),
	)
}
