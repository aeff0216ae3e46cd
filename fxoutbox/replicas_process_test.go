package fxoutbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/amqpbus"
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Order per key across consumer replicas on NATS JetStream, RabbitMQ and
// Redis Streams (issue 47): three consumer processes share a topic of
// eight lanes (natsjs, amqpbus or redisbus Config.TopicLanes,
// fxbus.InOrder, the inbox, the outbox's parking; on RabbitMQ the leases
// in the outbox's database, fxoutbox.LaneLeaseStore) while producers
// write keyed messages through the outbox without pause: one in the test's
// process, and two producer replicas (TestOrderProducerChild) each
// SIGKILLed three times at seeded moments and started again, their
// relays sharing the outbox's eight lanes. At seeded moments the consumer
// replica that owns the poison key's lane is SIGKILLed once the key is
// parked, and started again; another stops cleanly (SIGTERM). Afterwards:
// per key, 0 wrong-order pairs of handled effects, 0 lost, 0 twice; each
// replica handled some; the killed one's keys were handled by the others
// within 5s (the defaults: Lease 3s, a step every 0.5s); and the poison
// key stayed parked on the replica that took its lane.

const (
	replicaLanes = 8
	poisonKey    = "k00" // orderKey(0): the producers bump it as the others
	poisonSeq    = 3
	// replicaPace is how often each of a producer's four goroutines bumps
	// a key.
	replicaPace = 100 * time.Millisecond
)

// replicaProcess is a consumer replica the test started.
type replicaProcess struct {
	name   string
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{} // closed once it has exited, err set
	err    error
}

func startReplicaProcess(t *testing.T, name string, env map[string]string) *replicaProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestReplicaChild$", "-test.v")
	cmd.Env = append(os.Environ(), "FXCQRS_REPLICA_NAME="+name)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &replicaProcess{name: name, cmd: cmd, out: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	require.NoError(t, cmd.Start())
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("replica %s:\n%s", name, p.out.String())
		}
	})
	return p
}

// wait waits for p's exit and returns how it ended.
func (p *replicaProcess) wait() error {
	<-p.exited
	return p.err
}

func TestNATSLanesAcrossReplicaProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("the replica test kills processes; not with -short")
	}
	t.Parallel()
	addr := natsAddr(t)
	topic := fmt.Sprintf("replicas_%d", rand.Uint32())
	dropStreamAtCleanup(t, addr, topic)
	dropStreamAtCleanup(t, addr, topic+"_poison")
	replicasAcrossProcesses(t, "nats", addr, topic, func(database) provisioner {
		ps, err := natsjs.New(natsjs.Config{URL: addr, TopicLanes: map[string]int{topic: replicaLanes}})
		require.NoError(t, err)
		return ps
	})
}

// TestRedisLanesAcrossReplicaProcesses is the replica test on Redis
// Streams (redisbus with TopicLanes).
func TestRedisLanesAcrossReplicaProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("the replica test kills processes; not with -short")
	}
	t.Parallel()
	addr := env("FXCQRS_REDIS_ADDR", "127.0.0.1:6379")
	reachable(t, "FXCQRS_REDIS_ADDR", addr)
	topic := fmt.Sprintf("replicas_%d", rand.Uint32())
	t.Cleanup(func() {
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		keys := []string{topic, topic + "_poison", "fxcqrs:lanes:" + topic, "fxcqrs:lanes:" + topic + "_poison", "fxcqrs:own:" + topic + ":replicas"}
		for n := 1; n < replicaLanes; n++ {
			keys = append(keys, fmt.Sprintf("%s._lane.%d", topic, n))
		}
		_ = c.Del(context.Background(), keys...).Err()
	})
	replicasAcrossProcesses(t, "redis", addr, topic, func(database) provisioner {
		ps, err := redisbus.New(redisbus.Config{Addr: addr, TopicLanes: map[string]int{topic: replicaLanes}})
		require.NoError(t, err)
		return ps
	})
}

// TestAMQPLanesAcrossReplicaProcesses is the replica test on RabbitMQ
// (amqpbus with TopicLanes, a classic queue with a single active consumer
// per lane, the leases in the outbox's database). The group's queues are
// provisioned first: RabbitMQ drops what reaches an exchange no queue is
// bound to.
func TestAMQPLanesAcrossReplicaProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("the replica test kills processes; not with -short")
	}
	t.Parallel()
	addr := env("FXCQRS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	reachable(t, "FXCQRS_AMQP_URL", hostOf(t, addr))
	topic := fmt.Sprintf("replicas_%d", rand.Uint32())
	t.Cleanup(func() {
		conn, err := amqp.Dial(addr)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range []string{topic + "._lanes", topic + "_poison_replicas"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(topic+"_poison", false, false)
		for n := range replicaLanes {
			ex := topic
			if n > 0 {
				ex = fmt.Sprintf("%s._lane.%d", topic, n)
			}
			_, _ = ch.QueueDelete(ex+"_replicas", false, false, false)
			_ = ch.ExchangeDelete(ex, false, false)
		}
	})
	replicasAcrossProcesses(t, "amqp", addr, topic, func(d database) provisioner {
		leases, err := fxoutbox.LaneLeaseStore(d.DB, fxoutbox.PostgreSQL, fxoutbox.Tables{})
		require.NoError(t, err)
		ps, err := amqpbus.New(amqpbus.Config{URL: addr, Group: "replicas", TopicLanes: map[string]int{topic: replicaLanes}, Leases: leases})
		require.NoError(t, err)
		return consumerProvisioner{ps}
	})
}

// provisioner provisions the replica test's topic before anything is
// published to it.
type provisioner interface {
	Provision(ctx context.Context, topics ...string) error
	Close() error
}

// consumerProvisioner provisions for the replicas' group (its queues).
type consumerProvisioner struct{ *amqpbus.PubSub }

func (p consumerProvisioner) Provision(ctx context.Context, topics ...string) error {
	return p.ProvisionConsumer(ctx, topics...)
}

// replicasAcrossProcesses is the replica test on broker ("nats", "amqp"
// or "redis") at addr, topic provisioned by the provisioner newPS makes
// on the test's database.
func replicasAcrossProcesses(t *testing.T, broker, addr, topic string, newPS func(database) provisioner) {
	d := openDatabase(t, fxoutbox.PostgreSQL)
	orderTables(t, d.DB)
	_, err := d.DB.Exec("ALTER TABLE handled ADD COLUMN replica TEXT NOT NULL DEFAULT ''")
	require.NoError(t, err)
	ps := newPS(d)
	require.NoError(t, ps.Provision(context.Background(), topic))
	require.NoError(t, ps.Close())
	seed := orderSeed(t)
	rnd := rand.New(rand.NewPCG(seed, 47))

	// The producers: one here throughout, two replicas killed and started
	// again meanwhile, each bumping the 24 keys (the poison key among
	// them) at random, each key in order.
	src := orderSource{Broker: broker, Addr: addr, Topic: topic, BrokerLanes: replicaLanes}
	relay, stopBumps := orderProducer(t, d.DB, src, rand.New(rand.NewPCG(seed, 48)), replicaPace)
	defer func() { _ = relay.Stop(context.Background()) }()
	defer stopBumps()
	var producers sync.WaitGroup
	killedProducers(t, &producers, map[string]string{
		"FXCQRS_ORDER_DSN": d.DSN, "FXCQRS_ORDER_BROKER": broker, "FXCQRS_ORDER_ADDR": addr,
		"FXCQRS_ORDER_TOPIC": topic, "FXCQRS_ORDER_SEED": strconv.FormatUint(seed, 10),
		"FXCQRS_ORDER_BROKER_LANES": strconv.Itoa(replicaLanes), "FXCQRS_ORDER_PACE": replicaPace.String(),
	}, seed, func(int) {})
	defer producers.Wait()

	env := map[string]string{
		"FXCQRS_REPLICA_DSN": d.DSN, "FXCQRS_REPLICA_ADDR": addr, "FXCQRS_REPLICA_TOPIC": topic,
		"FXCQRS_REPLICA_BROKER": broker,
	}
	replicas := map[string]*replicaProcess{}
	for _, name := range []string{"r1", "r2", "r3"} {
		replicas[name] = startReplicaProcess(t, name, env)
	}
	counts := func() map[string]int {
		out := map[string]int{}
		rows, err := d.DB.Query("SELECT replica, count(*) FROM handled GROUP BY replica")
		require.NoError(t, err)
		defer rows.Close()
		for rows.Next() {
			var r string
			var n int
			require.NoError(t, rows.Scan(&r, &n))
			out[r] = n
		}
		return out
	}
	admin, err := fxoutbox.NewAdmin(d.DB, fxoutbox.PostgreSQL, fxoutbox.Tables{}, nil)
	require.NoError(t, err)
	// parked is how many of the poison key's messages are parked, from
	// the first that failed on. A relay killed between its publish and its
	// delete publishes again, which only NATS takes for a duplicate: a
	// letter may come twice, and a message handled before the key was
	// parked may come again and be parked then.
	parked := func() int {
		letters, err := admin.ListDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: topic, Limit: 100_000})
		require.NoError(t, err)
		seqs := map[int]bool{}
		for _, l := range letters {
			var e Keyed
			require.NoError(t, json.Unmarshal(l.Payload, &e))
			if e.Key == poisonKey && e.Seq >= poisonSeq {
				seqs[e.Seq] = true
			}
		}
		return len(seqs)
	}
	waitLong(t, func() bool {
		c := counts()
		return c["r1"] > 10 && c["r2"] > 10 && c["r3"] > 10 && parked() >= 2
	})
	time.Sleep(time.Duration(rnd.IntN(1000)) * time.Millisecond) // a seeded moment

	// The victim: the replica that handles the poison key's lane.
	lane := fxbus.LaneOf(poisonKey, replicaLanes)
	lastBy := map[string]string{} // key → the replica that last handled it
	var atKill int64
	var victim string // the replica that last handled a key of the poison key's lane
	rows, err := d.DB.Query("SELECT n, k, replica FROM handled ORDER BY n")
	require.NoError(t, err)
	for rows.Next() {
		var k, r string
		require.NoError(t, rows.Scan(&atKill, &k, &r))
		lastBy[k] = r
		if fxbus.LaneOf(k, replicaLanes) == lane {
			victim = r
		}
	}
	require.NoError(t, rows.Err())
	rows.Close()
	require.NotEmpty(t, victim, "a key of the poison key's lane was handled")
	var victimKeys []string // its keys that go on (the poison key is parked)
	for k, r := range lastBy {
		if r == victim && k != poisonKey {
			victimKeys = append(victimKeys, k)
		}
	}
	killed := time.Now()
	require.NoError(t, replicas[victim].cmd.Process.Signal(syscall.SIGKILL))
	_ = replicas[victim].wait()
	waitLong(t, func() bool {
		for _, k := range victimKeys {
			var n int
			_ = d.DB.QueryRow("SELECT count(*) FROM handled WHERE k = $1 AND n > $2", k, atKill).Scan(&n)
			if n == 0 {
				return false
			}
		}
		return true
	})
	takeover := time.Since(killed)
	restarted := victim + "b"
	replicas[restarted] = startReplicaProcess(t, restarted, env)

	time.Sleep(time.Duration(500+rnd.IntN(1000)) * time.Millisecond) // a seeded moment
	var stopped string
	for _, name := range []string{"r1", "r2", "r3"} {
		if name != victim {
			stopped = name
			break
		}
	}
	require.NoError(t, replicas[stopped].cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, replicas[stopped].wait(), "a clean stop of %s", stopped)

	time.Sleep(time.Duration(500+rnd.IntN(1000)) * time.Millisecond) // a seeded moment
	stopBumps()
	producers.Wait() // the killed producers' last rounds
	waitLong(t, func() bool { return count(t, d.DB, "SELECT count(*) FROM fxcqrs_outbox") == 0 })
	last := map[string]int{}
	total := 0
	rows, err = d.DB.Query("SELECT k, seq FROM keyseq")
	require.NoError(t, err)
	for rows.Next() {
		var k string
		var seq int
		require.NoError(t, rows.Scan(&k, &seq))
		last[k] = seq
		if k != poisonKey {
			total += seq
		}
	}
	require.NoError(t, rows.Err())
	rows.Close()
	waitLong(t, func() bool {
		var n int
		_ = d.DB.QueryRow("SELECT count(DISTINCT (k, seq)) FROM handled WHERE k <> $1", poisonKey).Scan(&n)
		return n >= total
	})
	waitLong(t, func() bool { // every poison message after the first two parked, or handled (wrongly)
		var n int
		_ = d.DB.QueryRow("SELECT count(*) FROM handled WHERE k = $1", poisonKey).Scan(&n)
		return parked()+n >= last[poisonKey]
	})
	for name, p := range replicas {
		if name != victim && name != stopped {
			require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
			require.NoError(t, p.wait(), "a clean stop of %s", name)
		}
	}

	handled := map[string][]int{}
	rows, err = d.DB.Query("SELECT k, seq FROM handled ORDER BY n")
	require.NoError(t, err)
	for rows.Next() {
		var k string
		var seq int
		require.NoError(t, rows.Scan(&k, &seq))
		handled[k] = append(handled[k], seq)
	}
	require.NoError(t, rows.Err())
	rows.Close()
	wrong, lost, twice, effects := 0, 0, 0, 0
	for k, n := range last {
		if k == poisonKey {
			continue
		}
		seqs := handled[k]
		effects += len(seqs)
		seen := map[int]int{}
		for i, a := range seqs {
			seen[a]++
			for _, b := range seqs[i+1:] {
				if a > b {
					wrong++
				}
			}
		}
		for seq := 1; seq <= n; seq++ {
			switch seen[seq] {
			case 0:
				lost++
			case 1:
			default:
				twice++
			}
		}
	}
	c := counts()
	t.Logf("%s: %d messages over %d keys and the poison key (%d of it parked), from three producers (two SIGKILLed %d times each); handled by r1 %d, r2 %d, r3 %d, %s %d; %s SIGKILLed (it had the poison key's lane), its keys handled by the others %v after; %s stopped cleanly; %d wrong-order pairs, %d lost, %d twice",
		broker, total+last[poisonKey], len(last)-1, parked(), orderProducerUps, c["r1"], c["r2"], c["r3"], restarted, c[restarted], victim, takeover.Round(time.Millisecond), stopped, wrong, lost, twice)
	assert.Zero(t, wrong, "wrong-order pairs of a key's handled effects")
	assert.Zero(t, lost, "messages never handled")
	assert.Zero(t, twice, "messages handled twice")
	assert.Equal(t, total, effects)
	assert.Equal(t, []int{1, 2}, handled[poisonKey], "the poison key stayed parked through the takeover")
	assert.Equal(t, last[poisonKey]-poisonSeq+1, parked(), "its messages from the first that failed are parked")
	// The documented takeover is within 5s (Lease 3s and a step); it is
	// logged above (docs/replicas.md has the figures). The bound is twice
	// that, so that a machine too busy to run the processes on time does
	// not fail the test, while a takeover that waits for more than one
	// lease, or never comes, still does.
	assert.LessOrEqual(t, takeover, 10*time.Second, "the killed replica's keys handled by the others")
	for _, name := range []string{"r1", "r2", "r3", restarted} {
		assert.Positive(t, c[name], "replica %s handled some keys", name)
	}
}

// waitLong waits, up to three minutes, for cond: a loaded machine drains
// slowly.
func waitLong(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within three minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplicaChild is a consumer replica of the replica tests
// (FXCQRS_REPLICA_BROKER says which broker); it does nothing unless one
// of them started it. It consumes until SIGTERM, then stops cleanly.
func TestReplicaChild(t *testing.T) {
	name := os.Getenv("FXCQRS_REPLICA_NAME")
	if name == "" {
		t.Skip("started by the replica tests only")
	}
	db, err := sql.Open("pgx", os.Getenv("FXCQRS_REPLICA_DSN"))
	require.NoError(t, err)
	defer db.Close()
	topic := os.Getenv("FXCQRS_REPLICA_TOPIC")
	log := zap.NewNop()
	if os.Getenv("DEBUGX") != "" {
		log, _ = zap.NewDevelopment()
	}
	var (
		ps interface {
			message.Publisher
			message.Subscriber
		}
		brokerModule fx.Option
	)
	lanes := map[string]int{topic: replicaLanes}
	switch os.Getenv("FXCQRS_REPLICA_BROKER") {
	case "redis":
		ps, err = redisbus.New(redisbus.Config{
			Addr: os.Getenv("FXCQRS_REPLICA_ADDR"), Group: "replicas", Consumer: name,
			TopicLanes: lanes, Logger: log,
		})
	case "amqp": // under fx: the leases are fxoutbox.Module's
		brokerModule = amqpbus.Module(amqpbus.Config{
			URL: os.Getenv("FXCQRS_REPLICA_ADDR"), Group: "replicas", Member: name,
			TopicLanes: lanes, Logger: log,
		})
	default:
		ps, err = natsjs.New(natsjs.Config{
			URL: os.Getenv("FXCQRS_REPLICA_ADDR"), Group: "replicas", AckWait: 30 * time.Second,
			TopicLanes: lanes, Member: name, Logger: log,
		})
	}
	require.NoError(t, err)
	if ps != nil {
		brokerModule = fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber))))
	}
	terminated := make(chan os.Signal, 1)
	signal.Notify(terminated, syscall.SIGTERM)
	app := fx.New(fx.NopLogger, fx.Supply(log),
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		// Its relay shares the outbox's lanes with the producers': one
		// figure of lanes, and a killed replica's taken over as fast.
		fx.Supply(db, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Inbox: true, Relay: fxoutbox.RelayConfig{
			PollInterval: 20 * time.Millisecond, Lease: 500 * time.Millisecond, Lanes: orderLanes,
		}}),
		fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 8}}),
		brokerModule,
		fxbus.Subscribe[Keyed](topic, fxbus.InOrder(), fxbus.InFlight(32), fxbus.Retry(fxbus.RetryPolicy{MaxRetries: -1})),
		fxcqrs.AsEventHandler(func() eventFunc[Keyed] {
			return func(ctx context.Context, e Keyed) error {
				if e.Key == poisonKey && e.Seq == poisonSeq {
					return errors.New("the ledger refuses it")
				}
				_, err := fxoutbox.Tx(ctx).ExecContext(ctx, "INSERT INTO handled (k, seq, replica) VALUES ($1, $2, $3)", e.Key, e.Seq, name)
				return err
			}
		}),
	)
	require.NoError(t, app.Start(context.Background()))
	t.Log("started")
	<-terminated
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, app.Stop(ctx))
	if ps != nil {
		require.NoError(t, ps.Close())
	}
}
