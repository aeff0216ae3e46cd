package fxbus

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
)

// The in-process broker's machinery: a topic's consumer groups, each a
// queue of messages in publish order, and the subscriptions that take
// from it, a fixed number of workers each (see Embedded for the bounds
// and the order they keep).

// memTopic is a topic's consumer groups.
type memTopic struct {
	seq    uint64               // the last message's number
	groups map[string]*memGroup // by name; a subscription's own group has a name of its own
}

func (t *memTopic) live() bool {
	for _, g := range t.groups {
		if g.subs > 0 {
			return true
		}
	}
	return false
}

// sorted returns the groups, in an order every publish takes (two
// publishers wait for room in the same order).
func (t *memTopic) sorted() []*memGroup {
	out := make([]*memGroup, 0, len(t.groups))
	for _, g := range t.groups {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b *memGroup) int { return cmp.Compare(a.name, b.name) })
	return out
}

// memGroup is a consumer group of a topic: the messages it holds, in
// publish order, and those handed over.
type memGroup struct {
	name    string
	cond    *sync.Cond // on Embedded.mu: a change to pending, busy, subs
	pending []*entry   // waiting to be handed over, by seq
	out     []*handed  // handed over and not settled
	busy    map[string]int
	subs    int  // live subscriptions
	own     bool // a subscription's own group: it ends with it
	removed bool // an own group, after its subscription ended
}

// gone says that g takes no more messages: an own group whose
// subscription ended.
func (g *memGroup) gone() bool { return g.removed || (g.own && g.subs == 0) }

// entry is a published message, as a group holds it.
type entry struct {
	seq      uint64
	id       string
	payload  []byte
	metadata message.Metadata
	key      string
}

// handed is an entry handed over to one subscription.
type handed struct {
	ent       *entry
	sub       *memSub
	reclaimed chan struct{} // closed when the group took it back without its ack
}

// memSub is a subscription.
type memSub struct {
	group *memGroup
	flow  Flow
	ctx   context.Context
	ended bool // ctx ended or the broker closed: hand nothing more over
	out   chan *message.Message

	sending   int  // workers between taking a message and handing it over
	outClosed bool // out is closed: once ended and none is sending
}

// closeOut closes s's channel once it ended and no worker is about to
// send on it: a worker that waits for a message's ack does not hold it
// open, so that a consumer that stops acknowledging still sees the
// subscription end. e.mu is held.
func (s *memSub) closeOut() {
	if s.ended && s.sending == 0 && !s.outClosed {
		s.outClosed = true
		close(s.out)
	}
}

func (e *Embedded) subscribe(ctx context.Context, topic, group string, flow Flow) (<-chan *message.Message, error) {
	if err := e.CheckTopic(topic); err != nil {
		return nil, err
	}
	if flow.InFlight <= 0 {
		flow.InFlight = e.cfg.InFlight
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errEmbeddedClosed
	}
	t := e.topics[topic]
	if t == nil {
		t = &memTopic{groups: map[string]*memGroup{}}
		e.topics[topic] = t
	}
	own := group == "" // a subscription of a bus on the process's broker
	if own {
		group = fmt.Sprintf("\x00subscription %d", ownGroups.Add(1))
	}
	g := t.groups[group]
	if g == nil {
		g = &memGroup{name: group, cond: sync.NewCond(&e.mu), busy: map[string]int{}, own: own}
		t.groups[group] = g
	}
	if g.subs == 0 {
		g.reclaim() // a restart: what the ended subscriptions held comes back first
	}
	g.subs++
	s := &memSub{group: g, flow: flow, ctx: ctx, out: make(chan *message.Message)}
	var workers sync.WaitGroup
	workers.Add(flow.InFlight)
	e.wg.Add(flow.InFlight + 1)
	for range flow.InFlight {
		go func() {
			defer e.wg.Done()
			defer workers.Done()
			e.work(s)
		}()
	}
	stop := context.AfterFunc(ctx, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.end(s)
	})
	go func() {
		defer e.wg.Done()
		workers.Wait()
		stop()
		e.mu.Lock()
		defer e.mu.Unlock()
		e.end(s) // the broker closed
		s.sending = 0
		s.closeOut()
		if own {
			g.removed = true
			delete(t.groups, group)
			g.cond.Broadcast()
		}
		if len(t.groups) == 0 && e.topics[topic] == t {
			delete(e.topics, topic)
		}
	}()
	return s.out, nil
}

// ownGroups numbers the groups of subscriptions of their own.
var ownGroups atomic.Uint64

// end marks s ended, once; e.mu is held.
func (e *Embedded) end(s *memSub) {
	if s.ended {
		return
	}
	s.ended = true
	s.group.subs--
	s.group.cond.Broadcast()
	s.closeOut()
}

// reclaim takes back, in their place, the messages handed over to ended
// subscriptions and not settled: their late acks count for nothing.
func (g *memGroup) reclaim() {
	for _, h := range g.out {
		close(h.reclaimed)
		g.putBack(h.ent)
	}
	g.out = nil
	clear(g.busy)
}

// putBack puts ent back among the pending messages, in its place: before
// the first that was published after it (the ones put back are near the
// front).
func (g *memGroup) putBack(ent *entry) {
	i := slices.IndexFunc(g.pending, func(p *entry) bool { return p.seq > ent.seq })
	if i < 0 {
		i = len(g.pending)
	}
	g.pending = slices.Insert(g.pending, i, ent)
}

// work is one of s's InFlight places: it hands one message over at a
// time and waits for its ack or nack.
func (e *Embedded) work(s *memSub) {
	for {
		h := e.next(s)
		if h == nil {
			return
		}
		msg := message.NewMessage(h.ent.id, h.ent.payload)
		for k, v := range h.ent.metadata {
			msg.Metadata[k] = v
		}
		// The message outlives its subscription's context: a consumer that
		// stops finishes what it holds (a bus's Stop waits for it).
		msg.SetContext(context.WithoutCancel(s.ctx))
		select {
		case s.out <- msg:
			e.sent(s)
		case <-s.ctx.Done():
			e.sent(s)
			e.settle(h, false)
			continue // next returns nil: s ended
		case <-e.done:
			return
		}
		select {
		case <-msg.Acked():
			e.settle(h, true)
		case <-msg.Nacked():
			e.settle(h, false)
		case <-h.reclaimed:
		case <-e.done:
			return
		}
	}
}

// next waits for the next message s may take: the first pending one
// (with InOrder, the first whose key has none handed over), or nil once s
// ended.
func (e *Embedded) next(s *memSub) *handed {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := s.group
	for {
		if s.ended || e.closed || s.ctx.Err() != nil {
			return nil
		}
		for i, ent := range g.pending {
			if s.flow.InOrder && ent.key != "" && g.busy[ent.key] > 0 {
				continue
			}
			g.pending = slices.Delete(g.pending, i, i+1)
			if ent.key != "" {
				g.busy[ent.key]++
			}
			h := &handed{ent: ent, sub: s, reclaimed: make(chan struct{})}
			g.out = append(g.out, h)
			s.sending++
			g.cond.Broadcast() // room for a publish
			return h
		}
		g.cond.Wait()
	}
}

// sent says that a worker of s is no longer about to send.
func (e *Embedded) sent(s *memSub) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s.sending--
	s.closeOut()
}

// settle ends h's hand-over: acknowledged, it is done; nacked (or not
// taken), it goes back in its place, before its key's later messages.
func (e *Embedded) settle(h *handed, acked bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := h.sub.group
	i := slices.Index(g.out, h)
	if i < 0 {
		return // reclaimed
	}
	g.out = slices.Delete(g.out, i, i+1)
	if k := h.ent.key; k != "" {
		if g.busy[k]--; g.busy[k] <= 0 {
			delete(g.busy, k)
		}
	}
	if !acked && !g.removed {
		g.putBack(h.ent)
	}
	g.cond.Broadcast()
}
