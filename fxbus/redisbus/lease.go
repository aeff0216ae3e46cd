package redisbus

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// A replica's consumer name on a topic is held under a lease in Redis
// while it subscribes, so that two live processes never consume a stream
// under one name (each would take the other's pending entries for its
// own).

const (
	leaseEvery = time.Second    // how often a holder renews its lease
	leaseTTL   = 3 * leaseEvery // how long a lease outlives its last renewal
	maxSlots   = 64             // default names tried: Group-host, Group-host-1, …
)

var renewLease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') and 1 or 0`)

var releaseLease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

func (p *PubSub) leaseKey(topic, name string) string {
	return "fxbus:redisbus:consumer:" + topic + ":" + p.cfg.Group + ":" + name
}

// consumer returns the name this process consumes topic under, taking it
// on first use: Config.Consumer, or the first default name no live
// process holds on topic. A name whose holder died (its lease is no
// longer renewed) is taken once its lease expires, within leaseTTL, so
// that a killed replica started again gets its own name, and its pending
// entries, back.
func (p *PubSub) consumer(ctx context.Context, topic string) (string, error) {
	p.leaseMu.Lock()
	defer p.leaseMu.Unlock()
	if l, ok := p.leases[topic]; ok {
		return l.name, nil
	}
	explicit := p.cfg.Consumer != ""
	base := p.cfg.Consumer
	if !explicit {
		base = p.cfg.Group + "-" + p.host
	}
	token := fmt.Sprintf("%016x", rand.Uint64())
	for slot := range maxSlots {
		name := base
		if slot > 0 {
			name = fmt.Sprintf("%s-%d", base, slot)
		}
		live, err := p.takeLease(ctx, p.leaseKey(topic, name), token)
		if err != nil {
			return "", fmt.Errorf("redisbus: take the consumer name %q on %s: %w", name, topic, err)
		}
		if live {
			if explicit {
				return "", fmt.Errorf("redisbus: the consumer name %q (Config.Consumer) is in use on %s by another live process of group %q; give each replica a name of its own", name, topic, p.cfg.Group)
			}
			continue
		}
		if p.leases == nil {
			p.leases = map[string]lease{}
			p.subs.Add(1)
			go p.renew()
		}
		p.leases[topic] = lease{key: p.leaseKey(topic, name), name: name, token: token}
		return name, nil
	}
	return "", fmt.Errorf("redisbus: %d consumer names of group %q on %s on this host are in use (%s…): set Config.Consumer", maxSlots, p.cfg.Group, topic, base)
}

// lease is a consumer name held on a topic.
type lease struct{ key, name, token string }

// takeLease takes key for token and returns false, or returns true when
// a live process holds it: its lease decays slower than the clock over
// two renewal periods (it was renewed), or it was still held after
// three attempts.
func (p *PubSub) takeLease(ctx context.Context, key, token string) (live bool, err error) {
	const window = 2 * leaseEvery
	for range 3 {
		ok, err := p.client.SetNX(ctx, key, token, leaseTTL).Result()
		if err != nil || ok {
			return false, err
		}
		before, err := p.client.PTTL(ctx, key).Result()
		if err != nil {
			return false, err
		}
		if err := p.wait(ctx, window); err != nil {
			return false, err
		}
		after, err := p.client.PTTL(ctx, key).Result()
		switch {
		case err != nil:
			return false, err
		case after < 0: // gone: try again
		case before-after < window*3/4:
			return true, nil // renewed meanwhile
		default: // its holder died: wait for the lease to run out
			if err := p.wait(ctx, after); err != nil {
				return false, err
			}
		}
	}
	return true, nil
}

func (p *PubSub) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.closing:
		return fmt.Errorf("the PubSub is closed")
	}
}

// renew renews the leases until the PubSub closes, then releases them.
func (p *PubSub) renew() {
	defer p.subs.Done()
	t := time.NewTicker(leaseEvery)
	defer t.Stop()
	held := func() []lease {
		p.leaseMu.Lock()
		defer p.leaseMu.Unlock()
		ls := make([]lease, 0, len(p.leases))
		for _, l := range p.leases {
			ls = append(ls, l)
		}
		return ls
	}
	for {
		select {
		case <-t.C:
			for _, l := range held() {
				_ = renewLease.Run(context.Background(), p.client, []string{l.key}, l.token, leaseTTL.Milliseconds()).Err()
			}
		case <-p.closing:
			for _, l := range held() {
				_ = releaseLease.Run(context.Background(), p.client, []string{l.key}, l.token).Err()
			}
			return
		}
	}
}
