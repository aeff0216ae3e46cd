package fxoutbox_test

import (
	"database/sql"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// Each replica gives its bus the shared limiter on the outbox's database:
// the subscriptions' rate limits are then one budget for the service.
func ExampleNewSharedLimiter() {
	var (
		db     *sql.DB // the outbox's database, migrated
		pub    message.Publisher
		sub    message.Subscriber
		routes []fxbus.Routing
		subs   []fxbus.Subscription
	)
	// snippet:shared-limiter
	limiter, err := fxoutbox.NewSharedLimiter(db, fxoutbox.PostgreSQL, fxoutbox.Tables{})
	if err != nil {
		panic(err)
	}
	bus, err := fxbus.New(fxbus.Config{Publisher: pub, Subscriber: sub, Limiter: limiter}, routes, subs)
	// end snippet
	_, _ = bus, err
}
