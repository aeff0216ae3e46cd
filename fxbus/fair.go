package fxbus

import (
	"context"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/zap"
)

// Fair shares and rate limits, on the consuming side: a topic with
// FairShares or a RateLimit reads up to Lookahead messages beyond its
// InFlight handler slots from the broker; those over their budget wait
// for it in the process, and the handler slots go round-robin between
// the tenants (or keys) of the messages ready.

// FairShares hands the topic's handler slots ([InFlight]) round-robin
// between the tenants, keys or types (per) of the messages it holds
// ready, instead of in the order they came: a tenant with a thousand
// messages waiting takes one slot in turn while another has work. It
// reads ahead of its slots to have a choice ([Lookahead]). Every
// subscription of a topic must agree on it.
func FairShares(per Per) SubscribeOption {
	return subscribeFunc(func(s *subscription) { s.fair = per })
}

// Lookahead sets how many messages a topic with [FairShares] or a
// [RateLimit] reads from the broker beyond its InFlight handler slots:
// those it chooses among, and those that wait for their budget. While
// they are all held, it reads no more and the broker keeps the rest; so
// a budget's backlog larger than n holds back the messages behind it in
// the broker. Default: four times InFlight. Every subscription of a
// topic must agree on it.
func Lookahead(n int) SubscribeOption {
	return subscribeFunc(func(s *subscription) { s.lookahead = n })
}

// staged reports whether ts's messages go through a stage: it has fair
// shares or a rate limit.
func (ts *topicSubs) staged() bool { return ts.fair != 0 || ts.limited }

// lookaheadOf is ts's messages held beyond its limit handler slots.
func (ts *topicSubs) lookaheadOf(limit int) int {
	if !ts.staged() {
		return 0
	}
	if ts.lookahead > 0 {
		return ts.lookahead
	}
	return 4 * limit
}

// stage holds a staged topic's messages between their delivery (and,
// under InOrder, their key's turn) and the handler slots: those over a
// budget wait for it, those ready take the slots in turn by share.
type stage struct {
	b      *Bus
	ts     *topicSubs
	ctx    context.Context // the subscription's, ended too once its messages stop coming
	cancel context.CancelFunc
	slots  chan struct{} // the handler slots: InFlight
	out    chan *message.Message

	mu      sync.Mutex
	budgets map[string][]*message.Message // by budget: those waiting to ask, present while one asks
	shares  map[string][]*message.Message // ready, by share
	ring    []string                      // the shares with ready messages, in turn
	handed  map[*message.Message]struct{} // took a handler slot
	wake    chan struct{}
	asks    sync.WaitGroup
}

func newStage(ctx context.Context, b *Bus, ts *topicSubs, slots int) *stage {
	ctx, cancel := context.WithCancel(ctx)
	return &stage{
		b: b, ts: ts, ctx: ctx, cancel: cancel,
		slots:   make(chan struct{}, slots),
		out:     make(chan *message.Message),
		budgets: map[string][]*message.Message{},
		shares:  map[string][]*message.Message{},
		handed:  map[*message.Message]struct{}{},
		wake:    make(chan struct{}, 1),
	}
}

// run takes in's messages until it closes, hands them over through out,
// then nacks what it still holds and closes out.
func (s *stage) run(in <-chan *message.Message) {
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		s.dispatch()
	}()
	for msg := range in {
		s.put(msg)
	}
	s.cancel() // the subscription ended, or its broker closed it: nothing more goes
	<-dispatched
	s.asks.Wait()
	s.mu.Lock()
	var held []*message.Message
	for name, ms := range s.budgets {
		held = append(held, ms...)
		delete(s.budgets, name)
	}
	for share, ms := range s.shares {
		held = append(held, ms...)
		delete(s.shares, share)
	}
	s.ring = nil
	s.mu.Unlock()
	for _, m := range held {
		m.Nack()
	}
	close(s.out)
}

// put takes msg in: to its budget, or ready.
func (s *stage) put(msg *message.Message) {
	sub := s.ts.subscriptionOf(msg)
	if sub == nil || !sub.limited {
		s.ready(msg)
		return
	}
	l := sub.limit
	name := budgetName(s.ts.topic, sub.wireName(), l, l.Per.of(msg))
	s.mu.Lock()
	if waiting, asking := s.budgets[name]; asking {
		s.budgets[name] = append(waiting, msg)
		s.mu.Unlock()
		return
	}
	s.budgets[name] = []*message.Message{msg}
	s.asks.Add(1)
	s.mu.Unlock()
	go s.ask(name, l)
}

// ask takes the budget name for its messages, one after another, in the
// order they came: each goes ready once its Limiter lets it, and waits
// the time the Limiter says before asking again.
func (s *stage) ask(name string, l Limit) {
	defer s.asks.Done()
	throttled := false // the head has waited already: counted once
	for {
		s.mu.Lock()
		head := s.budgets[name][0]
		s.mu.Unlock()
		wait, err := s.b.limiter().Take(s.ctx, name, l, s.b.now())
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.b.log.Warn("a rate limit's budget could not be taken: the message waits and asks again",
				zap.String("topic", s.ts.topic), zap.String("messageId", head.UUID), zap.Error(err))
			wait = max(l.Interval(), 100*time.Millisecond)
		}
		if wait > 0 {
			if !throttled {
				throttled = true
				s.b.throttled.Add(1)
				s.b.log.Debug("message over its rate limit: it waits",
					zap.String("topic", s.ts.topic), zap.String("messageId", head.UUID), zap.Stringer("per", l.Per), zap.Duration("wait", wait))
			}
			select {
			case <-s.b.after(wait):
				continue
			case <-s.ctx.Done():
				return
			}
		}
		throttled = false
		s.mu.Lock()
		rest := s.budgets[name][1:]
		if len(rest) == 0 {
			delete(s.budgets, name)
		} else {
			s.budgets[name] = rest
		}
		s.mu.Unlock()
		s.ready(head)
		if len(rest) == 0 {
			return
		}
	}
}

// ready puts msg among those ready, in its share's turn.
func (s *stage) ready(msg *message.Message) {
	share := ""
	if s.ts.fair != 0 {
		share = s.ts.fair.of(msg)
	}
	s.mu.Lock()
	waiting, inTurn := s.shares[share]
	s.shares[share] = append(waiting, msg)
	if !inTurn {
		s.ring = append(s.ring, share)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dispatch hands a ready message over for each free handler slot, from
// the share whose turn it is, until the subscription ends.
func (s *stage) dispatch() {
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		msg := s.next()
		if msg == nil {
			return
		}
		select {
		case s.out <- msg:
		case <-s.ctx.Done():
			msg.Nack() // settled: its slot goes back
			return
		}
	}
}

// next takes the first ready message of the share whose turn it is, and
// puts the share at the end of the turn when it has more; nil once the
// subscription ended.
func (s *stage) next() *message.Message {
	for {
		s.mu.Lock()
		if len(s.ring) > 0 {
			share := s.ring[0]
			s.ring = s.ring[1:]
			ms := s.shares[share]
			msg := ms[0]
			if len(ms) > 1 {
				s.shares[share] = ms[1:]
				s.ring = append(s.ring, share)
			} else {
				delete(s.shares, share)
			}
			s.handed[msg] = struct{}{}
			s.mu.Unlock()
			return msg
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return nil
		}
	}
}

// settled gives msg's handler slot back, if it had one.
func (s *stage) settled(msg *message.Message) {
	s.mu.Lock()
	_, had := s.handed[msg]
	delete(s.handed, msg)
	s.mu.Unlock()
	if had {
		<-s.slots
	}
}

// subscriptionOf is the subscription of ts that takes msg, by its event
// name; nil when none does (the message is skipped later).
func (ts *topicSubs) subscriptionOf(msg *message.Message) *subscription {
	if s := ts.byName[msg.Metadata.Get(MetadataName)]; s != nil {
		return s
	}
	if msg.Metadata.Get(MetadataName) == "" {
		return ts.only
	}
	return nil
}

// limiter is the bus's Limiter: Config.Limiter, or one of its own in the
// process.
func (b *Bus) limiter() Limiter {
	if b.cfg.Limiter != nil {
		return b.cfg.Limiter
	}
	b.ownLimiter.Do(func() { b.localLimiter = NewLimiter() })
	return b.localLimiter
}

// after is the bus's timer (Config.After).
func (b *Bus) after(d time.Duration) <-chan time.Time {
	if b.cfg.After != nil {
		return b.cfg.After(d)
	}
	return time.After(d)
}
