package fxoutbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A noisy tenant with 20,000 rows waiting (5,000 on SQLite) in a lane and nine quiet
// tenants committing a row each after every batch the relay publishes,
// in the same lane, while the backlog drains: every quiet row is
// published within one relay pass of its commit (in the pass that was
// running when it committed, or the next), counted by the relay's
// passes, not by a clock. Read in id order alone, a quiet row waited for
// the backlog before it: a dozen passes of 16 batches.
func TestRelaySendsAQuietTenantsRowWithinOnePassOfANoisyBacklog(t *testing.T) {
	t.Parallel()
	forEachDatabase(t, func(t *testing.T, d database) {
		fairDrain(t, d, 1,
			func(i int) (tenant, key string) { return "noisy", fmt.Sprintf("n-%d", i%64) },
			func(j int) (tenant, key string) { q := fmt.Sprintf("quiet-%d", j); return q, q })
	})
}

// Between lanes likewise: a lane with a backlog of 20,000 rows does not
// hold another lane's rows back beyond one pass (the pass sends each
// lane's batches in turn, up to 16 of them, and leaves work to the next
// pass), with every row of one tenant.
func TestRelaySendsAQuietLanesRowWithinOnePassOfABackloggedLane(t *testing.T) {
	t.Parallel()
	const lanes = 2
	var noisyKeys, quietKeys []string
	for i := 0; len(noisyKeys) < 64 || len(quietKeys) < 9; i++ {
		key := fmt.Sprintf("k-%d", i)
		if fxoutbox.LaneOf(key, lanes) == 0 {
			noisyKeys = append(noisyKeys, key)
		} else {
			quietKeys = append(quietKeys, key)
		}
	}
	forEachDatabase(t, func(t *testing.T, d database) {
		fairDrain(t, d, lanes,
			func(i int) (tenant, key string) { return "", noisyKeys[i%64] },
			func(j int) (tenant, key string) { return "", quietKeys[j] })
	})
}

// noisyRows is the noisy backlog: 20,000 rows; on SQLite 5,000, still
// three passes' worth read in id order (SQLite under the race detector
// moves a few hundred rows a second).
func noisyRows(d database) int {
	if d.Dialect == fxoutbox.SQLite {
		return 5000
	}
	return 20000
}

const (
	quietOnes   = 9
	fairBatches = 100 // the relay's BatchSize
)

// fairDrain fills a topic of lanes lanes with noisyRows rows by noisy
// and runs a relay over it on a clock that stands still (it runs on
// commits' wakes alone), whose publisher commits a row of each of the
// quietOnes quiet (tenant, key)s after every fairBatches rows it takes,
// until the backlog has gone; then it checks that every quiet row went
// out within one pass of its commit and every key's rows in order.
func fairDrain(t *testing.T, d database, lanes int, noisy, quiet func(int) (tenant, key string)) {
	topic := fmt.Sprintf("fair_%d", rand.Uint32())
	clock := outboxtest.NewClock(time.Unix(1_700_000_000, 0))
	ins := d.Dialect.Rebind("INSERT INTO fxcqrs_outbox (topic, lane, message_id, payload, metadata, created_ns) VALUES (?, ?, ?, ?, ?, ?)")
	meta := func(tenant, key string) string {
		return fmt.Sprintf(`{%q:"Fair",%q:%q,%q:%q}`, fxbus.MetadataName, fxbus.MetadataKey, key, fxbus.MetadataTenant, tenant)
	}
	tx, err := d.DB.Begin()
	require.NoError(t, err)
	stmt, err := tx.Prepare(ins)
	require.NoError(t, err)
	for i := range noisyRows(d) {
		tenant, key := noisy(i)
		_, err := stmt.Exec(topic, fxoutbox.LaneOf(key, lanes), fmt.Sprintf("noisy/%s/%d", key, i), []byte("{}"), meta(tenant, key), clock.Now().UnixNano())
		require.NoError(t, err)
	}
	require.NoError(t, stmt.Close())
	require.NoError(t, tx.Commit())

	pub := &fairPublisher{noisyRows: noisyRows(d), published: map[string]uint64{}, committed: map[string]uint64{}, done: make(chan struct{})}
	b, err := fxbus.New(fxbus.Config{Publisher: pub}, nil, nil)
	require.NoError(t, err)
	o, err := fxoutbox.New(d.DB, b, fxoutbox.Config{Dialect: d.Dialect, Now: clock.Now, After: clock.After, Relay: fxoutbox.RelayConfig{
		Lanes: lanes, BatchSize: fairBatches,
	}}, nil)
	require.NoError(t, err)
	round := 0
	pub.passes = func() uint64 { return fxoutbox.RelayPasses(o) }
	pub.commit = func() { // under pub.mu, on the relay's goroutine, in a pass
		tx, err := d.DB.Begin()
		if !assert.NoError(t, err) {
			return
		}
		ids := make([]string, quietOnes)
		for j := range quietOnes {
			tenant, key := quiet(j)
			ids[j] = fmt.Sprintf("quiet/%s/%d", key, round)
			_, err := tx.Exec(ins, topic, fxoutbox.LaneOf(key, lanes), ids[j], []byte("{}"), meta(tenant, key), clock.Now().UnixNano())
			assert.NoError(t, err)
		}
		if !assert.NoError(t, tx.Commit()) {
			return
		}
		round++
		at := pub.passes()
		for _, id := range ids {
			pub.committed[id] = at
		}
		fxoutbox.Wake(o, topic) // as the unit of work's commit does
	}
	require.NoError(t, o.Start(context.Background()))
	defer func() { require.NoError(t, o.Stop(context.Background())) }()
	select {
	case <-pub.done:
	case <-time.After(8 * time.Minute):
		t.Fatal("the rows were not all published within 8 minutes")
	}

	pub.mu.Lock()
	defer pub.mu.Unlock()
	require.Positive(t, round)
	late, worst := 0, uint64(0)
	for id, at := range pub.committed {
		sent, ok := pub.published[id]
		require.True(t, ok, "%s not published", id)
		if sent-at > 1 {
			late++
		}
		worst = max(worst, sent-at)
	}
	t.Logf("%d quiet rows, %d passes in all; the latest went out %d passes after its commit", len(pub.committed), fxoutbox.RelayPasses(o), worst)
	assert.Zero(t, late, "of %d quiet rows, %d went out more than one pass after their commit (the latest %d passes)", len(pub.committed), late, worst)
	assert.Len(t, pub.published, pub.noisyRows+len(pub.committed), "every row published once")
	last := map[string]int{} // each key's rows in order
	for _, id := range pub.order {
		parts := strings.Split(id, "/")
		n, err := strconv.Atoi(parts[2])
		require.NoError(t, err)
		key := parts[0] + "/" + parts[1]
		if prev, ok := last[key]; ok {
			require.Greater(t, n, prev, "%s's rows out of order", key)
		}
		last[key] = n
	}
}

// fairPublisher records the relay's pass at each row it takes and
// commits the quiet rows (commit) after every fairBatches noisy rows,
// until the noisy rows have gone; it closes done once every row has.
type fairPublisher struct {
	mu        sync.Mutex
	passes    func() uint64
	commit    func()
	published map[string]uint64 // the relay's passes before the one that published it
	committed map[string]uint64 // the relay's passes before the one its commit came in
	order     []string
	noisy     int
	noisyRows int
	done      chan struct{}
	closed    bool
}

func (p *fairPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := p.passes()
	for _, m := range msgs {
		if _, again := p.published[m.UUID]; again {
			continue // at least once: counted at its first
		}
		p.published[m.UUID] = at
		p.order = append(p.order, m.UUID)
		if strings.HasPrefix(m.UUID, "noisy/") {
			p.noisy++
			if p.noisy%fairBatches == 0 && p.noisy < p.noisyRows {
				p.commit()
			}
		}
	}
	if !p.closed && p.noisy == p.noisyRows && len(p.published) == p.noisyRows+len(p.committed) {
		p.closed = true
		close(p.done)
	}
	return nil
}

func (p *fairPublisher) Close() error { return nil }
