package fxbus

import (
	"context"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
)

// subscriber is what the router consumes a topic through: the bus's
// subscriber, bounded and not the router's to close.
//
// Watermill's router closes the subscribers of its handlers when it
// closes; the bus promises never to close a subscriber it was given (one
// broker may serve several applications), so Close here does nothing
// and the bus closes only what it made.
//
// The router starts a goroutine per message it receives; the bound keeps
// at most limit messages of the topic between delivery and their ack or
// nack, and stops reading the broker's channel while it is reached, so
// that the broker holds the rest (backpressure, never a drop).
type subscriber struct {
	message.Subscriber
	limit    int
	inFlight *atomic.Int64 // the topic's messages between delivery and ack or nack
	settled  chan struct{} // a message was acknowledged or nacked, if anyone listens
	inOrder  bool          // a key's messages one at a time (see InOrder)

	// With fair shares or a rate limit (see stage): limit bounds the
	// handler slots, and the subscriber holds up to the topic's
	// Lookahead more, waiting.
	b  *Bus
	ts *topicSubs
}

// Close does nothing: the bus closes what it owns itself.
func (s subscriber) Close() error { return nil }

// Subscribe relays topic's messages, at most limit unacknowledged at once
// and, with inOrder, one of each key at a time. A subscriber that consumes
// under a Flow (a FlowSubscriber) is asked for the same: it then holds no
// more than limit from the broker, and the bound here is a guard. A
// topic with fair shares or a rate limit holds its Lookahead beyond
// limit, and hands at most limit over at once, through its stage.
func (s subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	window := s.limit
	if s.ts != nil {
		window += s.ts.lookaheadOf(s.limit)
	}
	var (
		in  <-chan *message.Message
		err error
	)
	if fs, ok := s.Subscriber.(FlowSubscriber); ok {
		in, err = fs.SubscribeFlow(ctx, topic, Flow{InFlight: window, InOrder: s.inOrder})
	} else {
		in, err = s.Subscriber.Subscribe(ctx, topic)
	}
	if err != nil {
		return nil, err
	}
	q := &sequencer{out: make(chan *message.Message), done: ctx.Done(), waiting: map[string][]*message.Message{}}
	out := q.out
	var st *stage
	if s.ts != nil && s.ts.staged() {
		st = newStage(ctx, s.b, s.ts, s.limit)
		out = st.out
		go st.run(q.out)
	}
	slots := make(chan struct{}, window)
	go func() {
		defer q.close()
		for msg := range in {
			if ctx.Err() != nil { // ended: hand nothing more over, whatever is ready
				msg.Nack() // not handed over: the broker redelivers it
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				msg.Nack()
				continue
			}
			s.inFlight.Add(1)
			go func() { // at most limit of these wait at once
				acked := false
				select {
				case <-msg.Acked():
					acked = true
				case <-msg.Nacked():
				}
				if st != nil {
					st.settled(msg)
				}
				s.inFlight.Add(-1)
				select { // for Stop, which waits for the messages in flight
				case s.settled <- struct{}{}:
				default:
				}
				<-slots
				if s.inOrder {
					q.settled(msg, acked)
				}
			}()
			if s.inOrder {
				q.take(msg)
			} else {
				q.hand(msg)
			}
		}
	}()
	return out, nil
}
