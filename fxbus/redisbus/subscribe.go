package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/internal/lanes"
	"github.com/redis/go-redis/v9"
)

// defaultInFlight is a plain Subscribe's bound on entries held at once.
const defaultInFlight = 16

// Subscribe reads topic's stream in the Group's consumer group, at most
// 16 entries at once.
func (p *PubSub) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return p.SubscribeFlow(ctx, topic, fxbus.Flow{InFlight: defaultInFlight})
}

// SubscribeFlow reads topic's stream as the Consumer of the Group's
// consumer group (made if it does not exist), holding at most
// flow.InFlight entries read and not acknowledged: each XREADGROUP asks
// for no more than the free places, each entry is acknowledged (XACK) by
// itself, and a nacked entry stays pending and is handed over again.
// Entries are handed over in the stream's order: first those the
// Consumer already holds pending (a restarted replica resumes where it
// stopped), then those of dead consumers idle for MaxIdleTime, then new
// ones; a nacked entry goes before every later one. With flow.InOrder a
// key's entries are handed over one at a time.
func (p *PubSub) SubscribeFlow(ctx context.Context, topic string, flow fxbus.Flow) (<-chan *message.Message, error) {
	if p.cfg.Group == "" {
		return nil, errors.New("redisbus: Subscribe needs Config.Group, the name of the service's consumer group")
	}
	if err := p.CheckTopic(topic); err != nil {
		return nil, err
	}
	if flow.InFlight <= 0 {
		flow.InFlight = defaultInFlight
	}
	if err := p.provision(ctx, topic); err != nil {
		return nil, fmt.Errorf("redisbus: subscribe to %s for %q: %w", topic, p.cfg.Group, err)
	}
	if flow.InOrder && p.lanesOf(topic) > 1 {
		return p.subscribeLanes(ctx, topic, flow)
	}
	name, err := p.consumer(ctx, topic)
	if err != nil {
		return nil, err
	}
	s := p.startStream(ctx, topic, flow, name, nil)
	return s.out, nil
}

// laneOf is what a subscription of one lane, among a lane set's, has of
// it: the set's channel, and the lane's lease.
type laneOf struct {
	out   chan *message.Message // the set's: the subscription does not close it
	lease fxbus.LaneLease
}

// startStream reads the stream key as the Group's consumer name: a
// topic's (lane nil), or a lane's.
func (p *PubSub) startStream(ctx context.Context, key string, flow fxbus.Flow, name string, lane *laneOf) *stream {
	// Reads block on a client of their own, closed to end one at once.
	opts := *p.client.Options()
	opts.PoolSize = 1
	reader := redis.NewClient(&opts)
	s := &stream{
		p: p, ctx: ctx, topic: key, flow: flow, reader: reader, name: name, lane: lane,
		out:   make(chan *message.Message),
		wake:  make(chan struct{}, 1),
		free:  make(chan struct{}, 1),
		idle:  make(chan struct{}, 1),
		ended: make(chan struct{}),
		q:     lanes.New[*entry](flow.InOrder),
		held:  map[string]bool{},
	}
	if lane != nil {
		s.out = lane.out
	}
	p.streamsMu.Lock()
	if p.streams == nil {
		p.streams = map[*stream]bool{}
	}
	p.streams[s] = true
	p.streamsMu.Unlock()
	p.subs.Add(4)
	go func() {
		defer p.subs.Done()
		s.keepHeld(ctx)
	}()
	handed, read := make(chan struct{}), make(chan struct{})
	go func() {
		defer p.subs.Done()
		defer close(read)
		s.read(ctx)
	}()
	go func() {
		defer p.subs.Done()
		defer close(handed)
		s.hand(ctx)
	}()
	go func() {
		defer p.subs.Done()
		defer close(s.ended)
		select {
		case <-ctx.Done():
		case <-p.closing:
		}
		_ = reader.Close() // ends a blocked read
		<-read
		<-handed
		if lane == nil {
			close(s.out) // a lane set closes its own
		}
		s.settleAll()
		p.streamsMu.Lock()
		delete(p.streams, s)
		p.streamsMu.Unlock()
	}()
	return s
}

// stream is one subscription.
type stream struct {
	p      *PubSub
	ctx    context.Context // the subscription's, for KeepHeld in tests
	topic  string
	flow   fxbus.Flow
	name   string // the Consumer
	reader *redis.Client
	lane   *laneOf // a lane's subscription, or nil
	out    chan *message.Message
	ended  chan struct{} // closed once what was handed over is settled
	wake   chan struct{} // the queue changed
	free   chan struct{} // a place was freed
	idle   chan struct{} // nothing is handed over

	mu     sync.Mutex
	q      *lanes.Queue[*entry]
	held   map[string]bool // ids read and not acknowledged: queued or handed over
	handed int
	watch  sync.WaitGroup
}

// entry is a stream entry held by the subscription.
type entry struct {
	x   redis.XMessage
	seq uint64
	key string
}

func (e *entry) Seq() uint64 { return e.seq }
func (e *entry) Key() string { return e.key }

// seqOf orders stream ids (ms-n) as numbers.
func seqOf(id string) uint64 {
	ms, n, _ := strings.Cut(id, "-")
	a, _ := strconv.ParseUint(ms, 10, 64)
	b, _ := strconv.ParseUint(n, 10, 64)
	return a<<20 | min(b, 1<<20-1)
}

// blockFor bounds one blocking read, after which dead consumers' entries
// are looked for again.
const blockFor = 2 * time.Second

// read reads entries while there are free places: first the Consumer's
// own pending ones, then dead consumers', then new ones.
func (s *stream) read(ctx context.Context) {
	cfg := s.p.cfg
	own, claim, orphansDone := "0", "0-0", false
	if s.lane != nil {
		// A lane's entries are only ever pending under its one consumer
		// name: its own, read first.
		claim, orphansDone = "", true
	}
	for ctx.Err() == nil {
		n := s.places(ctx)
		if n == 0 {
			return
		}
		var (
			xs  []redis.XMessage
			err error
		)
		switch {
		case own != "": // what this Consumer held when it stopped (or died)
			xs, err = s.readGroup(ctx, own, n, -1)
			if err == nil && len(xs) == 0 {
				own = ""
			} else if len(xs) > 0 {
				own = xs[len(xs)-1].ID
			}
		case claim == "0-0" && !orphansDone: // stopped or dead consumers', whose names nobody holds
			xs, err = s.claimOrphans(ctx, n)
			orphansDone = err == nil && len(xs) < n
		case claim != "": // dead consumers', idle for MaxIdleTime
			orphansDone = false
			var next string
			xs, next, err = s.reader.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: s.topic, Group: cfg.Group, Consumer: s.name,
				MinIdle: cfg.MaxIdleTime, Start: claim, Count: int64(n),
			}).Result()
			if err == nil {
				claim = next
				if next == "0-0" {
					claim = ""
				}
			}
		default:
			xs, err = s.readGroup(ctx, ">", n, blockFor)
			if err == nil && len(xs) == 0 && s.lane == nil {
				claim = "0-0" // idle: look for dead consumers' entries again
			}
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			if !s.pause(ctx) {
				return
			}
			continue
		}
		s.take(ctx, xs)
	}
}

// claimOrphans claims up to n entries pending under consumer names of
// the Group that no process holds (a replica that stopped, or died over
// leaseTTL ago, or a consumer of an earlier version), at once rather
// than after MaxIdleTime.
func (s *stream) claimOrphans(ctx context.Context, n int) ([]redis.XMessage, error) {
	consumers, err := s.reader.XInfoConsumers(ctx, s.topic, s.p.cfg.Group).Result()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, c := range consumers {
		if c.Name == s.name || c.Pending == 0 || len(ids) >= n {
			continue
		}
		held, err := s.reader.Exists(ctx, s.p.leaseKey(s.topic, c.Name)).Result()
		if err != nil {
			return nil, err
		}
		if held > 0 {
			continue
		}
		pending, err := s.reader.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: s.topic, Group: s.p.cfg.Group, Consumer: c.Name,
			Start: "-", End: "+", Count: int64(n - len(ids)),
		}).Result()
		if err != nil {
			return nil, err
		}
		for _, p := range pending {
			ids = append(ids, p.ID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return s.reader.XClaim(ctx, &redis.XClaimArgs{
		Stream: s.topic, Group: s.p.cfg.Group, Consumer: s.name, Messages: ids,
	}).Result()
}

func (s *stream) readGroup(ctx context.Context, from string, n int, block time.Duration) ([]redis.XMessage, error) {
	res, err := s.reader.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: s.p.cfg.Group, Consumer: s.name,
		Streams: []string{s.topic, from}, Count: int64(n), Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil || len(res) == 0 {
		return nil, err
	}
	return res[0].Messages, nil
}

// pause waits a second after a failed read, or until the subscription
// ends (false).
func (s *stream) pause(ctx context.Context) bool {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.p.closing:
		return false
	}
}

// places waits until fewer than InFlight entries are held and returns how
// many more may be read; 0 when the subscription ends.
func (s *stream) places(ctx context.Context) int {
	for {
		s.mu.Lock()
		n := s.flow.InFlight - len(s.held)
		s.mu.Unlock()
		if n > 0 {
			return n
		}
		select {
		case <-s.free:
		case <-ctx.Done():
			return 0
		case <-s.p.closing:
			return 0
		}
	}
}

// take queues what was read; an entry deleted from the stream (trimmed)
// while pending is acknowledged, there is nothing to hand over.
func (s *stream) take(ctx context.Context, xs []redis.XMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range xs {
		if s.held[x.ID] {
			continue // already ours (a claim of our own slow entry)
		}
		if x.Values == nil {
			_ = s.p.client.XAck(context.WithoutCancel(ctx), s.topic, s.p.cfg.Group, x.ID).Err()
			continue
		}
		key, _ := x.Values["metadata"].(string)
		e := &entry{x: x, seq: seqOf(x.ID)}
		if key != "" {
			e.key = metadataKey(key)
		}
		s.held[x.ID] = true
		s.q.Push(e)
	}
	signal(s.wake)
}

// metadataKey reads the key from an entry's metadata (msgpack, as
// watermill-redisstream wrote it).
func metadataKey(md string) string {
	m, err := decode(map[string]any{redisstream.UUIDHeaderKey: "", "metadata": md})
	if err != nil {
		return ""
	}
	return m.Metadata.Get(fxbus.MetadataKey)
}

// decode reads an entry's values as watermill-redisstream wrote them.
func decode(values map[string]any) (*message.Message, error) {
	return redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(values)
}

// hand hands queued entries over, first in stream order and, with
// InOrder, one of a key at a time, until ctx ends.
func (s *stream) hand(ctx context.Context) {
	for {
		s.mu.Lock()
		e, ok := s.q.Next()
		if ok {
			s.handed++
		}
		s.mu.Unlock()
		if !ok {
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return
			case <-s.p.closing:
				return
			}
		}
		msg, err := decode(e.x.Values)
		if err != nil { // not watermill's format: handed over as it is, for the bus to dead-letter
			payload, _ := e.x.Values["payload"].(string)
			msg = message.NewMessage(e.x.ID, []byte(payload))
		}
		if s.lane != nil {
			msg.SetContext(fxbus.WithLaneLease(ctx, s.lane.lease))
		} else {
			msg.SetContext(ctx)
		}
		select {
		case s.out <- msg:
			s.watch.Add(1)
			go func() {
				defer s.watch.Done()
				select {
				case <-msg.Acked():
					s.settle(ctx, e, true)
				case <-msg.Nacked():
					s.settle(ctx, e, false)
				case <-s.p.closing: // settled already, or it stays pending under the Consumer's name
					select {
					case <-msg.Acked():
						s.settle(ctx, e, true)
					default:
					}
				}
			}()
		case <-ctx.Done():
			s.unhand(e)
			return
		case <-s.p.closing:
			s.unhand(e)
			return
		}
	}
}

func (s *stream) unhand(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handed--
	s.q.Done(e.key)
	s.q.Push(e)
}

// settle acknowledges e, or queues it again (in its place: before every
// later entry) when it was nacked.
func (s *stream) settle(ctx context.Context, e *entry, acked bool) {
	if acked && (s.lane == nil || s.lane.lease.Held()) { // fenced: the lane may be another replica's
		// A failed XACK leaves the entry pending: it comes again.
		_ = s.p.client.XAck(context.WithoutCancel(ctx), s.topic, s.p.cfg.Group, e.x.ID).Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handed--
	s.q.Done(e.key)
	if acked || ctx.Err() != nil {
		delete(s.held, e.x.ID) // nacked after the end: pending, for the next start
		signal(s.free)
	} else {
		s.q.Push(e)
	}
	signal(s.wake)
	if s.handed == 0 {
		signal(s.idle)
	}
}

// settleAll waits until what was handed over is settled, or the PubSub
// closes.
func (s *stream) settleAll() {
	for {
		s.mu.Lock()
		n := s.handed
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-s.idle:
			continue
		case <-s.p.closing:
		}
		break
	}
	s.watch.Wait()
}

// keepHeld claims again, every third of MaxIdleTime, the entries this
// subscription holds, which resets their idle time: a handler that runs
// longer than MaxIdleTime keeps its entry instead of another replica
// claiming it and handling it beside it.
func (s *stream) keepHeld(ctx context.Context) {
	t := time.NewTicker(max(s.p.cfg.MaxIdleTime/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.claimHeld(ctx)
		case <-ctx.Done():
			return
		case <-s.p.closing:
			return
		}
	}
}

// claimHeld resets the idle time of the entries held.
func (s *stream) claimHeld(ctx context.Context) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.held))
	for id := range s.held {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	_ = s.p.client.XClaimJustID(ctx, &redis.XClaimArgs{
		Stream: s.topic, Group: s.p.cfg.Group, Consumer: s.name, Messages: ids,
	}).Err()
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
