package fxbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/zap"
)

// Order per key, on the consuming side: a subscription with InOrder hands
// a key's messages to its handlers one after another, in the order the
// broker delivers them, while messages of other keys run beside them
// within the topic's bound on messages in flight; and a message of a key
// that failed for good parks the key's later messages behind it.

// InOrder processes the messages of one key ([KeyBy], the [MetadataKey]
// metadata) one at a time, in the order the broker delivers them, while
// messages of different keys, and messages without a key, run in
// parallel within [InFlight]. A message waiting behind its key holds one
// of the topic's InFlight places. Every subscription of a topic must
// agree on it.
//
// With a Parking (fxoutbox.Module gives the bus one), a message that
// fails for good holds back only its own key: it goes to the dead letter
// as always, and the key's later messages are parked behind it (recorded
// with it, acknowledged, not handled) while the other keys flow. Replaying
// the key's dead letters (fxoutbox.Admin.Replay or Release, or the repair
// tools) releases them, in their order; a replayed message that fails
// again parks the key again, in its place. Without a Parking, a message
// that fails for good dead-letters and its key's later messages go on, as
// without InOrder; the bus says so at start.
// A key is parked per tenant ([ParkedKey]): a message of tenant X that
// fails for good parks X's later messages of its key, while tenant Y's
// messages of the key go on.
//
// The order is the order of delivery to this process: one process that
// consumes the topic (or the broker's own partitioning, such as one
// consumer per lane) keeps a key's order; two replicas that share one
// consumer split a key's messages between them. A message nacked for
// redelivery (the mediator stopping) nacks its key's messages waiting
// behind it, so that none overtakes it.
func InOrder() SubscribeOption {
	return subscribeFunc(func(s *subscription) { s.inOrder = true })
}

// Admission is what a Parking says of a message of a parked key.
type Admission uint8

const (
	// AdmitFree says the key has nothing parked: handle the message.
	AdmitFree Admission = iota
	// AdmitReplay says the message is the key's first parked message,
	// released: handle it, then say how it went (Arrived or Repark).
	AdmitReplay
	// AdmitParked says the message is parked behind the key's first (the
	// Parking recorded it): acknowledge it without handling it.
	AdmitParked
)

// Parking records the keys whose messages wait behind one that failed for
// good, for subscriptions with [InOrder]. fxoutbox's Admin is one, on the
// inbound dead letters table; [Config.DeadLetters] gives it to the bus
// when it implements Parking too. Every message it records is also a
// dead letter, listed and repaired like the others.
type Parking interface {
	// RecordParked records msg, of topic and key, which failed for good
	// with reason, as a dead letter that parks its key: what a
	// subscription with InOrder records instead of RecordDeadLetter.
	RecordParked(ctx context.Context, topic, key string, msg *message.Message, reason error) error
	// ParkedKeys returns topic's keys that have parked messages, each
	// with the tenant whose messages it parks: read when the bus starts,
	// and again when a lane changes hands ([LaneLease]). A tenant whose
	// parked keys cannot be read (its store down) is a ParkedKey with an
	// empty Key: the bus asks Admit about each of the tenant's keyed
	// messages, and reads the parked keys again once an Admit of the
	// tenant's answers. An error fails the bus's start, or redelivers the
	// lane's messages of every tenant: keep it for what holds back every
	// tenant.
	ParkedKeys(ctx context.Context, topic string) ([]ParkedKey, error)
	// Admit says what to do with msg, of topic and key, which a message
	// of the key parked before; for AdmitParked it has recorded msg.
	Admit(ctx context.Context, topic, key string, msg *message.Message) (Admission, error)
	// Arrived says that the released message id of key was handled: it
	// is no longer parked.
	Arrived(ctx context.Context, topic, key, id string) error
	// Repark says that the released message id of key failed for good
	// again: it parks its key again, in its place, with reason.
	Repark(ctx context.Context, topic, key, id string, reason error) error
}

// ParkedKey is a key with parked messages, of one tenant: a key is parked
// per tenant, so that tenant X's parked key holds back X's later messages
// of the key, never tenant Y's.
type ParkedKey struct {
	// Tenant is the tenant of the parked messages ([MetadataTenant]), as
	// [Tenants] resolves it: on a subscription with InOrder the bus
	// writes the resolved id into a keyed message's metadata before it
	// parks or asks about it, so that this is the text a Parking records
	// with a message. "" for messages without one.
	Tenant string
	// Key is the key ([MetadataKey]); "" says that Tenant's parked keys
	// of the topic could not be read (its store down, say): every keyed
	// message of Tenant's may be parked, and the bus asks Admit about
	// each. An Admit that errors redelivers the message (the tenant's
	// keyed messages wait, the other tenants' flow); one that answers
	// says that the tenant's store answers again, and the bus reads the
	// parked keys again, which replace it with the tenant's parked keys.
	Key string
}

// unread is the ParkedKey that says tenant's parked keys could not be
// read.
func unread(tenant string) ParkedKey { return ParkedKey{Tenant: tenant} }

// canonicalTenant writes into msg's metadata the id Config.Tenants
// resolves its tenant to, before its key is looked up among the parked:
// a key is parked per tenant, and a tenant's messages may name it in
// more than one way (a resolver that lowercases ids, say), each of which
// must find the park of the others. An unknown tenant is left as it is,
// for the handler to dead-letter; a resolver that cannot tell fails the
// attempt, to be redelivered.
func (b *Bus) canonicalTenant(msg *message.Message) error {
	id, ok := msg.Metadata[MetadataTenant]
	if !ok || b.cfg.Tenants == nil {
		return nil
	}
	known, err := b.resolveTenant(context.WithoutCancel(msg.Context()), msg)
	if errors.As(err, new(*unknownTenant)) {
		return nil
	}
	if err != nil {
		return err
	}
	switch known {
	case id:
	case "":
		delete(msg.Metadata, MetadataTenant) // Resolve hands it to the default tenant
	default:
		msg.Metadata[MetadataTenant] = known
	}
	return nil
}

// parkedOf is the ParkedKey of msg, of key: its tenant's.
func parkedOf(msg *message.Message, key string) ParkedKey {
	return ParkedKey{Tenant: msg.Metadata.Get(MetadataTenant), Key: key}
}

// parkedKeys is the keys, by tenant, of a topic this process knows to
// have parked messages: a message of any other tenant or key is handled
// without asking the Parking.
type parkedKeys struct {
	mu   sync.Mutex
	keys map[ParkedKey]struct{}

	// Across replicas (an adapter that shares lanes): the epoch of each
	// lane's lease whose parked keys were read; a message of a lane taken
	// since reads them again, so that a key another replica parked is
	// parked here too.
	reload sync.Mutex
	epochs map[int]uint64
}

// laneTaken reads the parked keys of ts's topic again when l is the first
// message seen of its lane under its lease's epoch: the lane came from
// another replica, which may have parked some of its keys. A key parked
// here stays parked (its release goes through Admit).
func (b *Bus) laneTaken(ctx context.Context, ts *topicSubs, p Parking, l LaneLease) error {
	ts.parked.reload.Lock()
	defer ts.parked.reload.Unlock()
	if e, ok := ts.parked.epochs[l.Lane]; ok && e == l.Epoch {
		return nil
	}
	keys, err := p.ParkedKeys(ctx, ts.topic)
	if err != nil {
		return fmt.Errorf("fxbus: the parked keys of %s, lane %d taken over: %w", ts.topic, l.Lane, err)
	}
	ts.parked.merge(keys)
	if ts.parked.epochs == nil {
		ts.parked.epochs = map[int]uint64{}
	}
	ts.parked.epochs[l.Lane] = l.Epoch
	return nil
}

// readAgain reads the parked keys of ts's topic again once an Admit of
// tenant's message answered while tenant's parked keys could not be read
// (unread): its store answers again, and its parked keys replace the
// unread mark. Should they fail to be read, the mark stays, and the
// tenant's next keyed message is asked about, and reads them again.
func (b *Bus) readAgain(ctx context.Context, ts *topicSubs, p Parking, tenant string) {
	ts.parked.reload.Lock()
	defer ts.parked.reload.Unlock()
	if !ts.parked.has(unread(tenant)) {
		return // read again meanwhile
	}
	keys, err := p.ParkedKeys(ctx, ts.topic)
	if err != nil {
		b.log.Warn("a tenant's store answers again, and the parked keys cannot be read again: its keyed messages are still asked about, one by one",
			zap.String("topic", ts.topic), zap.String("tenant", tenant), zap.Error(err))
		return
	}
	ts.parked.merge(keys)
}

// merge takes keys, read from the Parking: each is parked; a tenant
// marked unread is no more unless keys mark it again. Keys parked before
// stay parked: one parked here since keys were read is in its store,
// and a release goes through Admit.
func (p *parkedKeys) merge(keys []ParkedKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.keys == nil {
		p.keys = map[ParkedKey]struct{}{}
	}
	for k := range p.keys {
		if k.Key == "" && !slices.Contains(keys, k) {
			delete(p.keys, k)
		}
	}
	for _, k := range keys {
		p.keys[k] = struct{}{}
	}
}

func (p *parkedKeys) has(key ParkedKey) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.keys[key]
	return ok
}

func (p *parkedKeys) set(key ParkedKey, parked bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.keys == nil {
		p.keys = map[ParkedKey]struct{}{}
	}
	if parked {
		p.keys[key] = struct{}{}
	} else {
		delete(p.keys, key)
	}
}

// keyOnlyParking is a Parking as it was before keys were parked per
// tenant: with it the bus would not park, silently, for the type
// assertion in parking fails; New refuses it instead.
type keyOnlyParking interface {
	ParkedKeys(ctx context.Context, topic string) ([]string, error)
}

// parking returns the bus's Parking, or nil.
func (b *Bus) parking() Parking {
	p, _ := b.cfg.DeadLetters.(Parking)
	return p
}

// loadParked reads the parked keys of ts's topic, for a subscription with
// InOrder.
func (b *Bus) loadParked(ctx context.Context, ts *topicSubs) error {
	p := b.parking()
	if p == nil {
		b.log.Warn("a subscription keeps its keys' order, and nothing parks a key behind a message that fails for good (no Parking: the outbox module gives one); such a message dead-letters and its key's later messages go on",
			zap.String("topic", ts.topic))
		return nil
	}
	keys, err := p.ParkedKeys(ctx, ts.topic)
	if err != nil {
		return fmt.Errorf("fxbus: the parked keys of %s: %w", ts.topic, err)
	}
	ts.parked.merge(keys)
	return nil
}

// park is the middleware of an InOrder topic, between the dead letter's
// and the retries': a message of a key its tenant parked is asked about,
// and parked or handled as its Parking says; a message of a free key
// that fails for good parks its key for its tenant (its dead letter
// record, with its key and metadata, is the park). A key another tenant
// parked is free: its Parking is not asked.
func (b *Bus) park(ts *topicSubs, p Parking) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			key := msg.Metadata.Get(MetadataKey)
			if key == "" {
				return h(msg)
			}
			if err := b.canonicalTenant(msg); err != nil {
				return nil, &redeliver{err}
			}
			if l, ok := LaneLeaseOf(msg.Context()); ok {
				if err := b.laneTaken(context.WithoutCancel(msg.Context()), ts, p, l); err != nil {
					return nil, &redeliver{err}
				}
			}
			pk := parkedOf(msg, key)
			adm := AdmitFree
			unknown := ts.parked.has(unread(pk.Tenant)) // its tenant's parked keys could not be read
			if unknown || ts.parked.has(pk) {
				var err error
				adm, err = p.Admit(context.WithoutCancel(msg.Context()), ts.topic, key, msg)
				if err != nil {
					return nil, &redeliver{fmt.Errorf("ask whether key %q is parked: %w", key, err)}
				}
				if unknown {
					b.readAgain(context.WithoutCancel(msg.Context()), ts, p, pk.Tenant)
				}
			}
			switch adm {
			case AdmitParked:
				b.attempts.Add(1) // an attempt, of none: Stats' retries are attempts beyond the messages
				b.parkedMsgs.Add(1)
				b.log.Info("message parked behind its key's dead letter", zap.String("topic", ts.topic), zap.String("key", key), zap.String("messageId", msg.UUID))
				return nil, nil
			case AdmitReplay:
				out, err := h(msg)
				ctx := context.WithoutCancel(msg.Context())
				switch {
				case err == nil:
					if aerr := p.Arrived(ctx, ts.topic, key, msg.UUID); aerr != nil {
						b.log.Error("a released message was handled and is still recorded as parked: when it comes again, a handler with the inbox skips it", zap.String("topic", ts.topic), zap.String("messageId", msg.UUID), zap.Error(aerr))
					}
					return out, nil
				case errors.As(err, new(*redeliver)):
					return nil, err
				}
				if perr := p.Repark(ctx, ts.topic, key, msg.UUID, err); perr != nil {
					return nil, &redeliver{fmt.Errorf("repark key %q: %w", key, perr)}
				}
				b.deadLettered.Add(1)
				b.log.Warn("a released message failed again: its key is parked again", zap.String("topic", ts.topic), zap.String("key", key), zap.String("messageId", msg.UUID), zap.Error(err))
				return nil, nil
			}
			ts.parked.set(pk, false)
			out, err := h(msg)
			if err != nil && !errors.As(err, new(*redeliver)) && !errors.Is(err, ErrExpired) {
				ts.parked.set(pk, true) // its dead letter record parks the key for its tenant (an expired message's does not)
			}
			return out, err
		}
	}
}

// sequencer hands a topic's messages on, those of one key one at a time:
// the next of a key once the one before it is acknowledged.
type sequencer struct {
	out  chan *message.Message
	done <-chan struct{} // the subscription's context

	mu      sync.Mutex
	waiting map[string][]*message.Message // by key: present while one of the key is handed over, with those behind it
	closed  bool
	hands   sync.WaitGroup // hand-overs under way, from the reader and from acks
}

// take is the reader's: msg goes now, or behind its key's.
func (q *sequencer) take(msg *message.Message) {
	key := msg.Metadata.Get(MetadataKey)
	if key == "" {
		q.hand(msg)
		return
	}
	q.mu.Lock()
	if behind, busy := q.waiting[key]; busy {
		q.waiting[key] = append(behind, msg)
		q.mu.Unlock()
		return
	}
	q.waiting[key] = nil
	q.mu.Unlock()
	q.hand(msg)
}

// settled is called once msg was acked (or nacked): its key's next goes,
// or, after a nack, every one behind it is nacked too, so that none
// overtakes it.
func (q *sequencer) settled(msg *message.Message, acked bool) {
	key := msg.Metadata.Get(MetadataKey)
	if key == "" {
		return
	}
	q.mu.Lock()
	behind := q.waiting[key]
	if !acked || len(behind) == 0 || q.closed {
		delete(q.waiting, key)
		q.mu.Unlock()
		for _, m := range behind {
			m.Nack()
		}
		return
	}
	next := behind[0]
	q.waiting[key] = behind[1:]
	q.hands.Add(1)
	q.mu.Unlock()
	go func() {
		defer q.hands.Done()
		q.send(next)
	}()
}

func (q *sequencer) hand(msg *message.Message) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		msg.Nack()
		return
	}
	q.hands.Add(1)
	q.mu.Unlock()
	defer q.hands.Done()
	q.send(msg)
}

func (q *sequencer) send(msg *message.Message) {
	select {
	case <-q.done: // ended: nothing more is handed over, though out is ready
		msg.Nack()
		return
	default:
	}
	select {
	case q.out <- msg:
	case <-q.done:
		msg.Nack()
	}
}

// close nacks what waits behind its key, waits for the hand-overs under
// way, and closes out: nothing is handed over after.
func (q *sequencer) close() {
	q.mu.Lock()
	q.closed = true
	var behind []*message.Message
	for key, ms := range q.waiting {
		behind = append(behind, ms...)
		delete(q.waiting, key)
	}
	q.mu.Unlock()
	for _, m := range behind {
		m.Nack()
	}
	q.hands.Wait()
	close(q.out)
}
