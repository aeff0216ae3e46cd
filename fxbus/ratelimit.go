package fxbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Rate limits at a subscription: a message over its budget waits in the
// process, outside the handler slots ([InFlight]), for the time its
// [Limiter] says, and is then handled; it is never dropped. The waiting
// itself is the fair stage's (fair.go).

// Per is what a subscription's rate limit or fair shares count by.
type Per uint8

const (
	// PerKey counts by the message's key ([MetadataKey]); messages
	// without a key are one key, "".
	PerKey Per = iota + 1
	// PerTenant counts by the message's tenant ([MetadataTenant]); the
	// default tenant's messages are one tenant, "".
	PerTenant
	// PerType counts by the message's event name ([MetadataName]).
	PerType
)

// String names p: "key", "tenant" or "type".
func (p Per) String() string {
	switch p {
	case PerKey:
		return "key"
	case PerTenant:
		return "tenant"
	case PerType:
		return "type"
	}
	return "Per(" + strconv.Itoa(int(p)) + ")"
}

// of is what msg counts as under p.
func (p Per) of(msg *message.Message) string {
	switch p {
	case PerKey:
		return msg.Metadata.Get(MetadataKey)
	case PerTenant:
		return msg.Metadata.Get(MetadataTenant)
	case PerType:
		return msg.Metadata.Get(MetadataName)
	}
	return ""
}

// Limit is a rate limit: Rate messages every Every, with bursts of up to
// Burst at once, for each tenant, key or type (Per).
//
// It is a GCRA (a token bucket of Burst tokens, one back every
// Every/Rate): from rest, Burst messages go at once, then one every
// Every/Rate. Over any span s, at most Burst + Rate·s/Every go: 100 a
// second with a burst of 50 lets at most 1,050 go in 10 seconds.
type Limit struct {
	// Per is what the budget is kept for: each key, tenant or type has
	// its own. Required.
	Per Per `json:"per" yaml:"per"`
	// Rate is the messages let go every Every. Required, positive.
	Rate int `json:"rate" yaml:"rate"`
	// Every is the span Rate counts over. Default: a second.
	Every time.Duration `json:"every" yaml:"every"`
	// Burst is the messages that may go at once after a quiet spell.
	// Default 1: none beyond the rate.
	Burst int `json:"burst" yaml:"burst"`
}

func (l Limit) withDefaults() Limit {
	if l.Every <= 0 {
		l.Every = time.Second
	}
	if l.Burst <= 0 {
		l.Burst = 1
	}
	return l
}

// Interval is the time between two messages at the limit's rate:
// Every/Rate (at least a nanosecond).
func (l Limit) Interval() time.Duration {
	l = l.withDefaults()
	if l.Rate <= 0 {
		return 0
	}
	return max(l.Every/time.Duration(l.Rate), time.Nanosecond)
}

// Tolerance is how far ahead of the rate a budget may run: Burst-1
// intervals. A GCRA lets a message go when the budget's theoretical
// arrival time is at most Tolerance after now.
func (l Limit) Tolerance() time.Duration {
	l = l.withDefaults()
	return time.Duration(l.Burst-1) * l.Interval()
}

func (l Limit) check() error {
	var errs []string
	if l.Per < PerKey || l.Per > PerType {
		errs = append(errs, fmt.Sprintf("Per must be PerKey, PerTenant or PerType: got %v", l.Per))
	}
	if l.Rate <= 0 {
		errs = append(errs, fmt.Sprintf("Rate must be positive: got %d", l.Rate))
	}
	if l.Every < 0 || l.Burst < 0 {
		errs = append(errs, "Every and Burst must not be negative")
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

// RateLimit limits the subscription's messages to l, for each key,
// tenant or type (l.Per), across the replicas that share the bus's
// [Limiter] ([Config.Limiter]; the outbox's shared limiter keeps the
// budget in the database). A message over its budget waits in the
// process, without a handler slot ([InFlight]), as long as the Limiter
// says, then is handled: it is never dropped, and the other keys' messages
// go past it. The messages of one budget ask in the order they came, and
// under [InOrder] a key's later messages wait behind it. A waiting
// message is still held from the broker: see [Lookahead]. Given twice,
// the last holds.
func RateLimit(l Limit) SubscribeOption {
	return subscribeFunc(func(s *subscription) { s.limit, s.limited = l, true })
}

// Limiter keeps rate limits' budgets: in the process ([NewLimiter], the
// default) or shared between the replicas of a service
// (fxoutbox.SharedLimiter, in the database).
type Limiter interface {
	// Take takes one message from the budget name, under l, at now (the
	// bus's clock): it returns 0 when the message may go, its budget
	// taken, and otherwise how long to wait before asking again, its
	// budget untouched. An error leaves the message waiting; the bus
	// asks again later.
	Take(ctx context.Context, name string, l Limit, now time.Time) (time.Duration, error)
}

// gcra is the in-process Limiter: each budget's theoretical arrival time.
type gcra struct {
	mu  sync.Mutex
	tat map[string]time.Time
}

// NewLimiter returns a Limiter that keeps its budgets in the process (a
// GCRA per budget, on the times it is given): each replica has budgets of
// its own. It is the bus's default. Its budgets, one small entry per
// key, tenant or type met, are kept while the limiter is.
func NewLimiter() Limiter { return &gcra{tat: map[string]time.Time{}} }

// Take is Limiter's.
func (g *gcra) Take(_ context.Context, name string, l Limit, now time.Time) (time.Duration, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	tat, ok := g.tat[name]
	if !ok || tat.Before(now) {
		tat = now
	}
	if wait := tat.Sub(now) - l.Tolerance(); wait > 0 {
		return wait, nil
	}
	g.tat[name] = tat.Add(l.Interval())
	return 0, nil
}

// budgetName is the name of the budget of msg's subscription s, on topic,
// under s's limit: the topic, the subscription's event name, what the
// limit counts by and its value, hashed when long (a shared limiter's
// names are short keys in a table) or when it is not text a database
// stores as it is (a key or a tenant is the sender's: invalid UTF-8, a
// NUL).
func budgetName(topic, event string, l Limit, value string) string {
	name := topic + "\x1f" + event + "\x1f" + l.Per.String() + "\x1f" + value
	if len(name) <= 190 && utf8.ValidString(name) && !strings.ContainsRune(name, 0) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	prefix := topic[:min(len(topic), 64)]
	for !utf8.ValidString(prefix) || strings.ContainsRune(prefix, 0) { // cut at a character's start
		prefix = prefix[:len(prefix)-1]
	}
	return prefix + "\x1f#" + hex.EncodeToString(sum[:])
}
