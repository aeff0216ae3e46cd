package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/nats-io/nats.go"
)

const (
	// defaultInFlight is Subscribe's bound on messages held, for a caller
	// that does not give a Flow.
	defaultInFlight = 64
	// pullExpiry is how long a pull request waits on the server for
	// messages before it ends (an idle subscription asks again).
	pullExpiry = 10 * time.Second
	// pullGrace is how much longer the subscription waits for a pull
	// request's end before it takes it as lost (a reconnection).
	pullGrace = 5 * time.Second
	// retryPull is how soon a pull is asked again after the server
	// refused one (the consumer was deleted, being remade).
	retryPull = 250 * time.Millisecond
	// drainBound bounds the wait for the inbox's drain when a
	// subscription stops.
	drainBound = 5 * time.Second
)

// Subscribe is SubscribeFlow with InFlight 64 and without InOrder.
func (p *PubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return p.SubscribeFlow(ctx, topic, fxbus.Flow{InFlight: defaultInFlight})
}

// SubscribeFlow pulls topic's messages from the Group's durable consumer,
// holding no more than flow.InFlight of them (handed over or waiting
// behind their key) until they are acknowledged or nacked. It provisions
// the topic's stream and makes the consumer when they do not exist, and
// remakes the consumer from its ack floor when it finds messages that a
// process held and did not acknowledge (see the package doc). With
// flow.InOrder, a key's messages are handed over one at a time, and a
// key's nacked message comes back before the key's later ones. The
// channel closes when ctx ends or the PubSub closes; what the
// subscription held and was not acknowledged is then given back (nacked)
// in stream order, once the messages handed over are settled.
func (p *PubSub) SubscribeFlow(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	if p.cfg.Group == "" {
		return nil, errors.New("natsjs: Subscribe needs Config.Group, the name of the service's durable consumer")
	}
	if flow.InFlight <= 0 {
		flow.InFlight = defaultInFlight
	}
	if err := p.CheckTopic(topic); err != nil {
		return nil, err
	}
	if err := p.ensureStream(ctx, topic, true); err != nil {
		return nil, err
	}
	if flow.InOrder && p.lanesOf(topic) > 1 {
		return p.subscribeLanes(ctx, topic, flow)
	}
	if _, err := p.ensureConsumer(topic); err != nil {
		return nil, err
	}
	s, err := p.startSubscription(ctx, topic, flow, p.cfg.Group, nil)
	if err != nil {
		return nil, err
	}
	return s.out, nil
}

// laneOf is what a subscription of one lane, among a lane set's, has of
// it: the set's channel, and the lane's lease.
type laneOf struct {
	out   chan *message.Message // the set's: the subscription does not close it
	lease fxbus.LaneLease
	ctx   context.Context // what each message's context is: carries lease
}

// startSubscription pulls from consumer, the group's durable consumer on
// topic's stream (lane nil) or a lane's.
func (p *PubSub) startSubscription(ctx context.Context, topic string, flow fxbus.Flow, consumer string, lane *laneOf) (*subscription, error) {
	s := &subscription{
		p: p, ctx: ctx, topic: topic, flow: flow, lane: lane,
		next:   "$JS.API.CONSUMER.MSG.NEXT." + streamName(topic) + "." + consumer,
		inbox:  p.conn.NewInbox(),
		held:   map[uint64]*delivery{},
		keys:   map[string][]*delivery{},
		fences: map[string][]fence{},
		wake:   make(chan struct{}, 1), readyC: make(chan struct{}, 1),
		stopC: make(chan struct{}), done: make(chan struct{}),
	}
	if lane != nil {
		s.out = lane.out
	} else {
		s.out = make(chan *message.Message)
	}
	sub, err := p.conn.Subscribe(s.inbox+".*", s.receive)
	if err != nil {
		return nil, fmt.Errorf("natsjs: subscribe to %s: %w", topic, err)
	}
	if lane == nil { // a lane's owner holds its lease: nobody asks whether it consumes
		s.presence, err = p.conn.Subscribe(presenceSubject(topic, p.cfg.Group), func(m *nats.Msg) { _ = m.Respond(nil) })
		if err != nil {
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("natsjs: subscribe to %s: %w", topic, err)
		}
	}
	// What arrives is bounded by the pulls, never by the client's limits:
	// a slow consumer's drop would lose a message until AckWait.
	_ = sub.SetPendingLimits(-1, -1)
	s.sub = sub
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = sub.Unsubscribe()
		if s.presence != nil {
			_ = s.presence.Unsubscribe()
		}
		return nil, errors.New("natsjs: closed")
	}
	p.subs[s] = struct{}{}
	p.mu.Unlock()
	s.goroutines.Add(3)
	go func() {
		defer s.goroutines.Done()
		s.pull()
	}()
	go func() {
		defer s.goroutines.Done()
		s.handOver()
	}()
	go func() {
		defer s.goroutines.Done()
		select {
		case <-ctx.Done():
		case <-s.stopC:
		}
		s.stop()
		select {
		case <-s.done:
		case <-p.closing:
		}
		if s.presence != nil {
			_ = s.presence.Unsubscribe() // nothing held any more
		}
		p.mu.Lock()
		delete(p.subs, s)
		p.mu.Unlock()
	}()
	return s, nil
}

// subscription is one SubscribeFlow: its pulls, what it holds, its
// channel.
type subscription struct {
	p           *PubSub
	ctx         context.Context // the subscriber's: once it ends, nacks are given back at the end
	topic, next string          // next: the consumer's pull subject
	flow        fxbus.Flow
	lane        *laneOf // a lane's subscription, or nil
	inbox       string
	sub         *nats.Subscription // on inbox.*: what the pulls bring
	presence    *nats.Subscription // answers a starting subscription: this one consumes (see othersConsume)
	out         chan *message.Message

	mu       sync.Mutex
	held     map[uint64]*delivery   // received, not yet acknowledged or given back, by stream sequence
	open     *pullRequest           // the pull request open on the server, if any
	pullSeq  int                    // names the pulls' reply subjects
	ready    []*delivery            // to hand over, in order
	handed   int                    // handed over, not yet settled
	keys     map[string][]*delivery // InOrder: a key's held messages, the first handed over (or ready)
	fences   map[string][]fence     // InOrder: a key's nacked messages not yet back, by ascending sequence
	gen      int                    // the consumer's incarnation: a deletion (409) makes the held messages stale
	refused  time.Time              // the server refused a pull: ask again after retryPull
	stopping bool                   // no more pulls and hand-overs; nacks are given back at the end
	drained  bool                   // the inbox is drained: nothing more arrives
	finished bool

	wake, readyC chan struct{} // the puller, the hander: something to do (capacity 1)
	stopC        chan struct{} // closed by stop
	stopOnce     sync.Once
	done         chan struct{} // closed when everything held is settled
	goroutines   sync.WaitGroup
}

// delivery is a message the subscription holds.
type delivery struct {
	m      *nats.Msg
	seq    uint64
	key    string // InOrder only
	gen    int
	msg    *message.Message // while handed over
	handed bool
}

// pullRequest is a pull request open on the server. JetStream delivers
// its messages with their own subjects (one inbox takes them all), and
// ends it with a status on its reply subject when it expires; one open
// at a time tells which request a message fills.
type pullRequest struct {
	reply     string
	remaining int       // the messages it may still bring
	lost      time.Time // no end seen by then: taken as lost (a reconnection)
}

// fence is a key's nacked message on its way back: until it is, the
// key's later messages are nacked behind it, unless it has not come back
// within AckWait (another replica took it).
type fence struct {
	seq   uint64
	since time.Time
}

// receive is the inbox's callback (one at a time): a pull's message, or
// a pull's end.
func (s *subscription) receive(m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code := m.Header.Get("Status"); code != "" && len(m.Data) == 0 {
		s.ended(m.Subject, code, m)
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		return // not a JetStream message: nothing to acknowledge
	}
	if s.open != nil {
		if s.open.remaining--; s.open.remaining <= 0 {
			s.open = nil // filled: JetStream ends it without a word
			signal(s.wake)
		}
	}
	d := &delivery{m: m, seq: meta.Sequence.Stream, gen: s.gen}
	if s.flow.InOrder {
		d.key = m.Header.Get(metadataKey)
	}
	if s.stopping || s.finished {
		s.held[d.seq] = d
		s.finish()
		return
	}
	if d.key != "" && s.fenced(d) {
		return
	}
	s.held[d.seq] = d
	if d.key != "" {
		q := s.keys[d.key]
		s.keys[d.key] = append(q, d)
		if len(q) > 0 {
			return // behind its key
		}
	}
	s.ready = append(s.ready, d)
	signal(s.readyC)
}

// fenced nacks d when a message of its key that is older was nacked and
// has not come back yet, and reports whether it did.
func (s *subscription) fenced(d *delivery) bool {
	f := s.fences[d.key]
	for len(f) > 0 && time.Since(f[0].since) > s.p.cfg.AckWait {
		f = f[1:] // it went elsewhere
	}
	switch {
	case len(f) == 0:
		delete(s.fences, d.key)
		return false
	case d.seq == f[0].seq:
		s.setFence(d.key, f[1:])
		return false
	case d.seq < f[0].seq:
		s.fences[d.key] = f
		return false
	}
	_ = s.ack(d, nakBody)
	if !slices.ContainsFunc(f, func(x fence) bool { return x.seq == d.seq }) {
		f = append(f, fence{d.seq, time.Now()})
		slices.SortFunc(f, func(a, b fence) int { return compare(a.seq, b.seq) })
	}
	s.fences[d.key] = f
	return true
}

func (s *subscription) setFence(key string, f []fence) {
	if len(f) == 0 {
		delete(s.fences, key)
		return
	}
	s.fences[key] = f
}

// ended forgets the pull that reply names, which JetStream ended with a
// status (code): it expired, or was refused.
func (s *subscription) ended(reply, code string, m *nats.Msg) {
	if code == "100" || s.open == nil || s.open.reply != reply {
		return // a heartbeat, or the end of a pull taken as lost
	}
	s.open = nil
	switch code {
	case "404", "408":
	case "409":
		if m.Header.Get("Description") != "Consumer Deleted" {
			s.refused = time.Now() // too many pulls waiting, or a limit: ask again later
			break
		}
		// The consumer was deleted (a starting process remade it from
		// its ack floor) or refused the pull: what this subscription
		// holds will be delivered again by the new one, and its
		// acknowledgements would reach the new consumer, which did not
		// deliver them.
		s.gen++
		s.refused = time.Now()
	default: // 503: no consumer (being remade)
		s.refused = time.Now()
	}
	signal(s.wake)
}

// pull keeps pulls open for what the subscription may still hold, and
// sends progress acknowledgements for what it holds.
func (s *subscription) pull() {
	progress := time.NewTicker(max(s.p.cfg.AckWait/4, 10*time.Millisecond))
	defer progress.Stop()
	retry := time.NewTimer(retryPull)
	defer retry.Stop()
	for {
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			return
		}
		now := time.Now()
		if s.open != nil && now.After(s.open.lost) {
			s.open = nil
		}
		free := s.flow.InFlight - len(s.held)
		if wait := retryPull - now.Sub(s.refused); wait > 0 {
			retry.Reset(wait)
		} else if free > 0 && s.open == nil {
			s.pullSeq++
			reply := fmt.Sprintf("%s.%d", s.inbox, s.pullSeq)
			req, _ := json.Marshal(struct {
				Batch   int           `json:"batch"`
				Expires time.Duration `json:"expires"`
			}{free, pullExpiry})
			if err := s.p.conn.PublishRequest(s.next, reply, req); err == nil {
				s.open = &pullRequest{reply: reply, remaining: free, lost: now.Add(pullExpiry + pullGrace)}
			} else {
				s.refused = now
				retry.Reset(retryPull)
			}
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-retry.C:
		case <-progress.C:
			s.progress()
		case <-s.stopC:
			return
		}
	}
}

// progress tells JetStream that every message held is still being worked
// on, so that a handler that runs longer than AckWait, or a message
// waiting behind its key, keeps its message instead of its being
// redelivered beside it.
func (s *subscription) progress() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.held {
		_ = s.ack(d, progressBody)
	}
}

// handOver hands the ready messages over, in order, until the
// subscription stops; then it closes the channel.
func (s *subscription) handOver() {
	if s.lane == nil {
		defer close(s.out) // a lane set closes its own
	}
	for {
		s.mu.Lock()
		for len(s.ready) == 0 {
			s.mu.Unlock()
			select {
			case <-s.readyC:
			case <-s.stopC:
				return
			}
			s.mu.Lock()
		}
		if s.stopping || s.ctx.Err() != nil {
			s.mu.Unlock()
			return // nothing is handed over once the subscriber stops
		}
		d := s.ready[0]
		s.ready = s.ready[1:]
		d.msg, d.handed = d.message(), true
		if s.lane != nil {
			d.msg.SetContext(s.lane.ctx)
		}
		s.handed++
		msg := d.msg
		s.mu.Unlock()
		select {
		case s.out <- msg:
			s.goroutines.Add(1)
			go func() {
				defer s.goroutines.Done()
				s.await(d, msg)
			}()
		case <-s.ctx.Done():
			s.unhand(d)
			return
		case <-s.stopC:
			s.unhand(d)
			return
		}
	}
}

// unhand takes back d, which the subscriber did not take: it stays held,
// to be given back with the rest.
func (s *subscription) unhand(d *delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d.msg, d.handed = nil, false
	s.handed--
	s.finish()
}

// await waits for the handler's ack or nack of d, or the PubSub's close.
func (s *subscription) await(d *delivery, msg *message.Message) {
	var acked bool
	select {
	case <-msg.Acked():
		acked = true
	case <-msg.Nacked():
	case <-s.p.closing:
	}
	s.settled(d, acked)
}

// settled is the end of a hand-over: an ack is sent on; a nack is sent on
// at once, with the key's messages behind it nacked after it, in order
// (JetStream redelivers nacked messages before new ones, in the order of
// their nacks); once the subscription stops, a nack is kept to be given
// back with the rest, in stream order.
func (s *subscription) settled(d *delivery, acked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d.msg, d.handed = nil, false
	s.handed--
	defer signal(s.wake)
	if !acked && (s.stopping || s.finished || s.ctx.Err() != nil) {
		// The subscriber stops: the nack is given back with the rest, in
		// stream order, whatever order the handlers nacked in.
		s.finish()
		return
	}
	delete(s.held, d.seq)
	if acked {
		_ = s.ack(d, ackBody)
	} else {
		_ = s.ack(d, nakBody)
	}
	if d.key == "" {
		s.finish()
		return
	}
	var behind []*delivery
	if q := s.keys[d.key]; len(q) > 0 {
		behind = q[1:]
	}
	switch {
	case acked && len(behind) > 0:
		s.keys[d.key] = behind
		s.ready = append(s.ready, behind[0])
		signal(s.readyC)
	case acked:
		delete(s.keys, d.key)
	default:
		delete(s.keys, d.key)
		f := append(s.fences[d.key], fence{d.seq, time.Now()})
		for _, b := range behind {
			delete(s.held, b.seq)
			_ = s.ack(b, nakBody)
			f = append(f, fence{b.seq, time.Now()})
		}
		slices.SortFunc(f, func(a, b fence) int { return compare(a.seq, b.seq) })
		s.fences[d.key] = slices.CompactFunc(f, func(a, b fence) bool { return a.seq == b.seq })
	}
	s.finish()
}

// stop ends the pulls, drains the inbox (what is on its way still
// arrives, and is held), and gives back what is held once the messages
// handed over are settled.
func (s *subscription) stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		close(s.stopC)
		closed := s.sub.StatusChanged(nats.SubscriptionClosed)
		if err := s.sub.Drain(); err == nil {
			bound := time.NewTimer(drainBound)
			select {
			case <-closed:
			case <-s.p.closing:
			case <-bound.C: // the server does not answer: nothing more will arrive
			}
			bound.Stop()
		}
		s.mu.Lock()
		s.drained = true
		s.finish()
		s.mu.Unlock()
	})
}

// finish gives back what the subscription holds once it stopped, its
// inbox is drained and nothing handed over is unsettled: nacked in
// stream order, so that JetStream redelivers it in that order, before
// newer messages. Called with mu held.
func (s *subscription) finish() {
	if !s.drained || s.handed > 0 {
		return
	}
	seqs := make([]uint64, 0, len(s.held))
	for seq := range s.held {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		_ = s.ack(s.held[seq], nakBody)
		delete(s.held, seq)
	}
	if !s.finished {
		s.finished = true
		close(s.done)
	}
}

var (
	ackBody      = []byte("+ACK")
	nakBody      = []byte("-NAK")
	progressBody = []byte("+WPI")
)

// ack sends body (an ack, a nack or a progress) for d, unless d came from
// a consumer since deleted. Called with mu held: the server takes a
// subscription's acks and nacks in the order they are sent.
func (s *subscription) ack(d *delivery, body []byte) error {
	if d.gen != s.gen {
		return nil
	}
	if s.lane != nil && !s.lane.lease.Held() {
		// Fenced: the lane may be another replica's, which remade its
		// consumer; an ack or a nack of this one's would reach it.
		s.gen++
		return nil
	}
	return s.p.conn.Publish(d.m.Reply, body)
}

// message is d as a Watermill message: its id from Nats-Msg-Id, its
// headers as metadata.
func (d *delivery) message() *message.Message {
	msg := message.NewMessage(messageID(d.m.Header.Get(nats.MsgIdHdr)), d.m.Data)
	for k, v := range d.m.Header {
		if k != nats.MsgIdHdr && len(v) > 0 {
			msg.Metadata.Set(k, v[0])
		}
	}
	return msg
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func compare(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
