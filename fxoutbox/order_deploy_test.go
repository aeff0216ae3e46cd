package fxoutbox_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The rolling-deploy test, on NATS JetStream, RabbitMQ and Redis
// Streams: while keyed messages flow (24 keys), the consumer process
// (InOrder, InFlight(32), the inbox) is replaced three times, one after
// another, as a deploy replaces a replica: the new process is started
// (connected, its bus and mediator built) while the old one consumes,
// the old one is stopped cleanly (SIGTERM), and then the new one
// subscribes. One process consumes at a time, the scope: what
// the old one held and did not handle goes back to the broker at its
// stop and comes to the new one first. Afterwards, per key, the handled
// effects are in order (0 wrong-order pairs), none is lost, none twice;
// the log gives each hand-over's gap (from the old one's SIGTERM to the
// new one consuming).

const deployReplacements = 3

func TestOrderThroughRollingDeploy(t *testing.T) {
	if testing.Short() {
		t.Skip("the deploy test runs processes; not with -short")
	}
	t.Parallel()
	for _, broker := range orderBrokers {
		t.Run(broker, func(t *testing.T) {
			t.Parallel()
			orderRollingDeploy(t, broker)
		})
	}
}

func orderRollingDeploy(t *testing.T, broker string) {
	addr, topic := provisionOrder(t, broker)
	d := openDatabase(t, fxoutbox.PostgreSQL)
	orderTables(t, d.DB)
	seed := orderSeed(t)
	rnd := rand.New(rand.NewPCG(seed, seed))
	env := []string{
		"FXCQRS_DEPLOY_CHILD=1", "FXCQRS_ORDER_DSN=" + d.DSN, "FXCQRS_ORDER_BROKER=" + broker,
		"FXCQRS_ORDER_ADDR=" + addr, "FXCQRS_ORDER_TOPIC=" + topic,
	}
	pub, err := orderPublisher(broker, addr)
	require.NoError(t, err)
	defer pub.Close()

	// The producer: keyed messages, about 300 a second, until the last
	// replacement has consumed a while.
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
		last = make([]int, orderKeys) // by key: the last seq published
	)
	wg.Go(func() {
		tick := time.NewTicker(3 * time.Millisecond) // pacing, not synchronisation
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			k := i % orderKeys
			if !assert.NoError(t, pub.Publish(topic, keyedMessage(Keyed{Key: orderKey(k), Seq: last[k] + 1}))) {
				return
			}
			last[k]++
		}
	})
	endProducer := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer endProducer()

	old := startDeployed(t, env)
	old.consume(t)
	var gaps []string
	for range deployReplacements {
		time.Sleep(time.Duration(200+rnd.IntN(400)) * time.Millisecond) // a seeded moment of the work
		next := startDeployed(t, env)
		from := time.Now()
		old.term(t) // its adapter closed: it holds nothing
		next.consume(t)
		gaps = append(gaps, time.Since(from).Round(time.Millisecond).String())
		old.wait(t)
		old = next
	}
	time.Sleep(time.Duration(200+rnd.IntN(400)) * time.Millisecond)
	endProducer()
	total := 0
	for k, n := range last {
		_, err := d.DB.Exec("UPDATE keyseq SET seq = $1 WHERE k = $2", n, orderKey(k))
		require.NoError(t, err)
		total += n
	}
	waitFor(t, func() bool { return count(t, d.DB, "SELECT COUNT(*) FROM handled") >= total })
	old.term(t)
	old.wait(t)
	t.Logf("%s: hand-overs (from the old process's SIGTERM to the new one consuming) %s", broker, strings.Join(gaps, ", "))
	checkOrder(t, d.DB, fmt.Sprintf("%s, the consumer replaced %d times", broker, deployReplacements))
}

// keyedMessage is e as the bus sends it, keyed.
func keyedMessage(e Keyed) *message.Message {
	payload, _ := json.Marshal(e)
	m := message.NewMessage(fmt.Sprintf("%s-%d", e.Key, e.Seq), payload)
	m.Metadata.Set(fxbus.MetadataName, "Keyed")
	m.Metadata.Set(fxbus.MetadataKey, e.Key)
	return m
}

// deployed is a consumer process of the rolling-deploy test.
type deployed struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	markers chan string // the lines it says what it did with
	read    chan struct{}
	mu      sync.Mutex
	out     strings.Builder
}

const (
	deployPrepared  = "deploy: prepared"
	deployConsuming = "deploy: consuming"
	deployStopped   = "deploy: stopped"
)

// startDeployed starts a consumer process and waits until it is
// prepared: connected, its bus and mediator built, not consuming.
func startDeployed(t *testing.T, env []string) *deployed {
	t.Helper()
	p := &deployed{
		cmd:     exec.Command(os.Args[0], "-test.run=^TestOrderDeployChild$", "-test.v"),
		markers: make(chan string, 3), read: make(chan struct{}),
	}
	p.cmd.Env = append(os.Environ(), env...)
	var err error
	p.stdin, err = p.cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := p.cmd.StdoutPipe()
	require.NoError(t, err)
	p.cmd.Stderr = p.cmd.Stdout
	require.NoError(t, p.cmd.Start())
	go func() {
		defer close(p.read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if l := sc.Text(); l == deployPrepared || l == deployConsuming || l == deployStopped {
				p.markers <- l
			}
		}
	}()
	p.await(t, deployPrepared)
	return p
}

func (p *deployed) await(t *testing.T, marker string) {
	t.Helper()
	select {
	case <-p.markers:
	case <-p.read:
		p.fail(t, "ended before it said %q", marker)
	case <-time.After(time.Minute):
		p.fail(t, "did not say %q within a minute", marker)
	}
}

func (p *deployed) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	_ = p.cmd.Process.Kill()
	<-p.read
	_ = p.cmd.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	t.Fatalf("the consumer process "+format+":\n%s", append(args, p.out.String())...)
}

// consume lets the process subscribe, and waits until it consumes.
func (p *deployed) consume(t *testing.T) {
	t.Helper()
	_, err := io.WriteString(p.stdin, "go\n")
	require.NoError(t, err)
	p.await(t, deployConsuming)
}

// term stops the process cleanly (SIGTERM) and waits until it stopped
// consuming and closed its adapter.
func (p *deployed) term(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	p.await(t, deployStopped)
}

// wait waits for the end of the process, which stopped consuming.
func (p *deployed) wait(t *testing.T) {
	t.Helper()
	<-p.read
	if err := p.cmd.Wait(); err != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		t.Fatalf("the consumer process failed its clean stop: %v\n%s", err, p.out.String())
	}
}

// TestOrderDeployChild is a consumer process of
// TestOrderThroughRollingDeploy: prepared, it waits for a line on its
// input to subscribe, then consumes until SIGTERM, and stops cleanly.
func TestOrderDeployChild(t *testing.T) {
	if os.Getenv("FXCQRS_DEPLOY_CHILD") == "" {
		t.Skip("started by TestOrderThroughRollingDeploy only")
	}
	term, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	c := orderConsumer(t, orderDB(t))
	fmt.Println(deployPrepared)
	_, err := bufio.NewReader(os.Stdin).ReadString('\n')
	require.NoError(t, err)
	c.start()
	fmt.Println(deployConsuming)
	<-term.Done()
	c.stop()
	fmt.Println(deployStopped)
}
