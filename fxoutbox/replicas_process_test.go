package fxoutbox_test

import (
	"bytes"
	"context"
	"database/sql"
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
	"github.com/fxcqrs/fxcqrs/fxbus/natsjs"
	"github.com/fxcqrs/fxcqrs/fxbus/redisbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/zap"
)

// Order per key across consumer replicas on NATS JetStream and Redis
// Streams (issue 47):
// three consumer processes share a topic of eight lanes (natsjs
// or redisbus Config.TopicLanes, fxbus.InOrder, the inbox, the outbox's
// parking)
// while the parent publishes keyed messages without pause. At seeded
// moments the replica that owns the poison key's lane is SIGKILLed once
// the key is parked, and started again; another stops cleanly (SIGTERM).
// Afterwards: per key, 0 wrong-order pairs of handled effects, 0 lost, 0
// twice; each replica handled some; the killed one's keys were handled by
// the others within 5s (the defaults: Lease 3s, a step every 0.5s); and
// the poison key stayed parked on the replica that took its lane.

const (
	replicaKeys  = 24
	replicaLanes = 8
	poisonKey    = "poison"
	poisonSeq    = 3
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
	ps, err := natsjs.New(natsjs.Config{URL: addr, TopicLanes: map[string]int{topic: replicaLanes}})
	require.NoError(t, err)
	replicasAcrossProcesses(t, "nats", addr, topic, ps)
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
	ps, err := redisbus.New(redisbus.Config{Addr: addr, TopicLanes: map[string]int{topic: replicaLanes}})
	require.NoError(t, err)
	replicasAcrossProcesses(t, "redis", addr, topic, ps)
}

// producer is a broker preset, as the replica test's parent publishes.
type producer interface {
	message.Publisher
	Provision(ctx context.Context, topics ...string) error
}

// replicasAcrossProcesses is the replica test on broker ("nats" or
// "redis") at addr, topic provisioned and published to by ps.
func replicasAcrossProcesses(t *testing.T, broker, addr, topic string, ps producer) {
	d := openDatabase(t, fxoutbox.PostgreSQL)
	_, err := d.DB.Exec("CREATE TABLE handled (n BIGSERIAL PRIMARY KEY, k TEXT NOT NULL, seq INT NOT NULL, replica TEXT NOT NULL)")
	require.NoError(t, err)
	defer func() { require.NoError(t, ps.Close()) }()
	require.NoError(t, ps.Provision(context.Background(), topic))
	seed := rand.Uint64()
	if s, err := strconv.ParseUint(os.Getenv("FXCQRS_CRASH_SEED"), 10, 64); err == nil {
		seed = s
	}
	rnd := rand.New(rand.NewPCG(seed, 47))
	t.Logf("seed %d (FXCQRS_CRASH_SEED replays it)", seed)

	// The producer: 24 keys and the poison key, in turn, each key in order.
	keys := []string{poisonKey}
	for k := range replicaKeys {
		keys = append(keys, fmt.Sprintf("k%02d", k))
	}
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
		last = map[string]int{}
	)
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond) // pacing, not synchronisation
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			key := keys[i%len(keys)]
			ev := Keyed{Key: key, Seq: last[key] + 1}
			m := message.NewMessage(fmt.Sprintf("%s-%d", ev.Key, ev.Seq), fmt.Appendf(nil, `{"Key":%q,"Seq":%d}`, ev.Key, ev.Seq))
			m.Metadata.Set(fxbus.MetadataName, "Keyed")
			m.Metadata.Set(fxbus.MetadataKey, ev.Key)
			if !assert.NoError(t, ps.Publish(topic, m)) {
				return
			}
			last[key] = ev.Seq
		}
	})
	stopProducer := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopProducer()

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
	parked := func() int {
		n, err := admin.CountDead(context.Background(), fxoutbox.DeadLetterFilter{Topic: topic})
		require.NoError(t, err)
		return n
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
	stopProducer()
	total := 0
	for k, n := range last {
		if k != poisonKey {
			total += n
		}
	}
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
	for _, k := range keys[1:] {
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
		for seq := 1; seq <= last[k]; seq++ {
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
	t.Logf("%s: %d messages over %d keys and the poison key (%d of it parked); handled by r1 %d, r2 %d, r3 %d, %s %d; %s SIGKILLed (it had the poison key's lane), its keys handled by the others %v after; %s stopped cleanly; %d wrong-order pairs, %d lost, %d twice",
		broker, total+last[poisonKey], replicaKeys, parked(), c["r1"], c["r2"], c["r3"], restarted, c[restarted], victim, takeover.Round(time.Millisecond), stopped, wrong, lost, twice)
	assert.Zero(t, wrong, "wrong-order pairs of a key's handled effects")
	assert.Zero(t, lost, "messages never handled")
	assert.Zero(t, twice, "messages handled twice")
	assert.Equal(t, total, effects)
	assert.Equal(t, []int{1, 2}, handled[poisonKey], "the poison key stayed parked through the takeover")
	assert.Equal(t, last[poisonKey]-poisonSeq+1, parked(), "its messages from the first that failed are parked")
	// The documented takeover is within 5s (Lease 3s and a step); it is
	// logged above, 2.9s to 4.7s under a load average of 26 on 2 cores.
	// The bound is twice that, so that a machine too busy to run the
	// processes on time does not fail the test, while a takeover that
	// waits for more than one lease, or never comes, still does.
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
	var ps interface {
		message.Publisher
		message.Subscriber
	}
	if os.Getenv("FXCQRS_REPLICA_BROKER") == "redis" {
		ps, err = redisbus.New(redisbus.Config{
			Addr: os.Getenv("FXCQRS_REPLICA_ADDR"), Group: "replicas", Consumer: name,
			TopicLanes: map[string]int{topic: replicaLanes}, Logger: log,
		})
	} else {
		ps, err = natsjs.New(natsjs.Config{
			URL: os.Getenv("FXCQRS_REPLICA_ADDR"), Group: "replicas", AckWait: 30 * time.Second,
			TopicLanes: map[string]int{topic: replicaLanes}, Member: name, Logger: log,
		})
	}
	require.NoError(t, err)
	terminated := make(chan os.Signal, 1)
	signal.Notify(terminated, syscall.SIGTERM)
	app := fx.New(fx.NopLogger, fx.Supply(log),
		fxcqrs.Module, fxbus.Module, fxoutbox.Module,
		fx.Supply(db, fxoutbox.Config{Dialect: fxoutbox.PostgreSQL, Inbox: true}),
		fx.Supply(fxcqrs.Config{Events: fxcqrs.EventConfig{MaxConcurrentHandlers: 8}}),
		fx.Supply(fx.Annotate(ps, fx.As(new(message.Publisher)), fx.As(new(message.Subscriber)))),
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
	require.NoError(t, ps.Close())
}
