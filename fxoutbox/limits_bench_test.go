package fxoutbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// BenchmarkLimiterTake: the cost of one message's take from a rate
// limit's budget, in the process (fxbus.NewLimiter) against the shared
// limiter on each database, in the same run: "go" is a take that lets
// the message go (one round trip), "wait" one refused (two: the update,
// then the budget's time).
func BenchmarkLimiterTake(b *testing.B) {
	ctx := context.Background()
	open := map[string]func(b *testing.B) fxbus.Limiter{
		"in-process": func(*testing.B) fxbus.Limiter { return fxbus.NewLimiter() },
	}
	for _, dialect := range []fxoutbox.Dialect{fxoutbox.PostgreSQL, fxoutbox.MySQL, fxoutbox.SQLite} {
		open[dialect.String()] = func(b *testing.B) fxbus.Limiter {
			d := openDatabase(b, dialect)
			l, err := fxoutbox.NewSharedLimiter(d.DB, d.Dialect, fxoutbox.Tables{})
			if err != nil {
				b.Fatal(err)
			}
			return l
		}
	}
	for _, name := range []string{"in-process", "postgresql", "mysql", "sqlite"} {
		b.Run(name+"/go", func(b *testing.B) {
			l := open[name](b)
			lim := fxbus.Limit{Per: fxbus.PerKey, Rate: 1000, Every: time.Second, Burst: 1}
			now := newFakeClock().Now()
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Millisecond) // an interval later: each take goes
				if wait, err := l.Take(ctx, "k", lim, now); err != nil || wait != 0 {
					b.Fatal(wait, err)
				}
			}
		})
		b.Run(name+"/wait", func(b *testing.B) {
			l := open[name](b)
			lim := fxbus.Limit{Per: fxbus.PerKey, Rate: 1, Every: time.Hour, Burst: 1}
			now := newFakeClock().Now()
			if _, err := l.Take(ctx, "k", lim, now); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if wait, err := l.Take(ctx, "k", lim, now); err != nil || wait == 0 {
					b.Fatal(wait, err)
				}
			}
		})
	}
}
