package kafkatest

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/kafkabus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// closedAddr is a host:port nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestNewNamesEachUnreachableSeed(t *testing.T) {
	a, b := closedAddr(t), closedAddr(t)
	_, err := kafkabus.New(kafkabus.Config{Brokers: []string{a, b}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "kafkabus.New: no seed broker answered")
	assert.Contains(t, err.Error(), a)
	assert.Contains(t, err.Error(), b)
}

func TestNewStartsWhenOneSeedAnswers(t *testing.T) {
	c := newCluster(t)
	ps, err := kafkabus.New(kafkabus.Config{Brokers: append([]string{closedAddr(t)}, c.ListenAddrs()...)})
	require.NoError(t, err)
	require.NoError(t, ps.Close())
}

// A CommitInterval franz-go would refuse at the first Subscribe fails New.
func TestNewRefusesACommitIntervalBelowFranzGosLeast(t *testing.T) {
	_, err := kafkabus.New(kafkabus.Config{Brokers: []string{closedAddr(t)}, CommitInterval: 10 * time.Millisecond})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "kafkabus.New: CommitInterval 10ms is below 100ms")
}

func TestCheckTopic(t *testing.T) {
	for _, ok := range []string{"orders", "billing.orders.v1", "a_b-c.D9", strings.Repeat("x", 249), "..."} {
		assert.NoError(t, kafkabus.CheckTopic(ok), ok)
	}
	for _, bad := range []string{"", ".", "..", "a b", "a/b", "a:b", "é", strings.Repeat("x", 250)} {
		err := kafkabus.CheckTopic(bad)
		if assert.Error(t, err, bad) {
			assert.Contains(t, err.Error(), strconv.Quote(bad))
			assert.Contains(t, err.Error(), kafkabus.TopicRule)
		}
	}
}

func TestCapabilities(t *testing.T) {
	c := newCluster(t)
	ps := newPubSub(t, c, "")
	caps := ps.Capabilities()
	assert.Equal(t, fxbus.Capabilities{
		Name: "kafka", OrderPerKey: true, Parallel: true,
		MaxPayload: 1<<20 - kafkabus.MetadataAllowance, TopicRule: kafkabus.TopicRule,
	}, caps)

	topic := name(t, "payload")
	require.NoError(t, ps.Provision(t.Context(), topic))
	require.NoError(t, ps.Publish(topic, keyed("max", "", strings.Repeat("x", caps.MaxPayload))),
		"a payload of MaxPayload bytes goes")
	err := ps.Publish(topic, keyed("over", "", strings.Repeat("x", caps.MaxPayload+1)))
	require.Error(t, err)
	assert.Contains(t, err.Error(), strconv.Itoa(caps.MaxPayload))
}

func TestProvisionCreatesTopicsAndPublishRefusesOthers(t *testing.T) {
	c := newCluster(t)
	ps := newPubSub(t, c, "", func(cfg *kafkabus.Config) { cfg.Partitions = 5 })
	missing := name(t, "missing")
	err := ps.Publish(missing, keyed("1", "k", "x"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), missing)
	assert.Contains(t, err.Error(), "does not exist")

	a, b := name(t, "a"), name(t, "b")
	require.NoError(t, ps.Provision(t.Context(), a, b))
	require.NoError(t, ps.Provision(t.Context(), a), "a topic that exists is left as it is")
	for _, topic := range []string{a, b} {
		assert.Len(t, c.PartitionInfos(topic), 5, topic)
	}
	require.NoError(t, ps.Publish(a, keyed("1", "k", "x")))
	assert.ErrorContains(t, ps.Provision(t.Context(), "a b"), `"a b"`)
}

// The route's key is the record's key: a key's records lie in one
// partition, the one Kafka's own partitioner picks, in publish order.
func TestKeyIsTheRecordKey(t *testing.T) {
	c := newCluster(t)
	ps := newPubSub(t, c, "")
	topic := name(t, "keys")
	require.NoError(t, ps.Provision(t.Context(), topic))
	var n int
	for i := range 5 {
		batch := make([]*message.Message, 0, 10)
		for k := range 10 {
			batch = append(batch, keyed(fmt.Sprintf("%d-%d", k, i), fmt.Sprintf("key-%d", k), strconv.Itoa(i)))
		}
		acked, err := ps.PublishBatch(topic, batch)
		require.NoError(t, err)
		require.Equal(t, len(batch), acked)
		n += len(batch)
	}
	recs := rawRecords(t, c, topic, n)
	last := map[string]int{}
	for _, r := range recs {
		key := string(r.Key)
		assert.Equal(t, partitionOf(key, 8), r.Partition, key)
		seq, err := strconv.Atoi(string(r.Value))
		require.NoError(t, err)
		if prev, ok := last[key]; ok {
			assert.Greater(t, seq, prev, "key %s out of order", key)
		}
		last[key] = seq
	}
	assert.Len(t, last, 10)
}

// Records of one batch fail independently: a partition that refuses
// records fails those of its keys; PublishBatch reports the acknowledged
// prefix and the first failure, and what is sent again goes.
func TestPublishBatchReportsTheAcknowledgedPrefix(t *testing.T) {
	c := newCluster(t)
	ps := newPubSub(t, c, "")
	topic := name(t, "batch")
	require.NoError(t, ps.Provision(t.Context(), topic))
	var good, bad []string // keys on other partitions, and on partition 3
	for i := 0; len(good) < 3 || len(bad) < 2; i++ {
		k := "k" + strconv.Itoa(i)
		if partitionOf(k, 8) == 3 {
			bad = append(bad, k)
		} else {
			good = append(good, k)
		}
	}
	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{3}, Err: kerr.InvalidRecord, Count: -1})

	batch := []*message.Message{keyed("g0", good[0], "1"), keyed("b0", bad[0], "2"), keyed("g1", good[1], "3")}
	acked, err := ps.PublishBatch(topic, batch)
	assert.Equal(t, 1, acked, "only the message before the refused one")
	require.Error(t, err)
	assert.Contains(t, err.Error(), topic)

	acked, err = ps.PublishBatch(topic, []*message.Message{keyed("g1", good[1], "3"), keyed("g2", good[2], "4"), keyed("b1", bad[1], "5")})
	assert.Equal(t, 2, acked)
	require.Error(t, err)

	fault.Remove()
	acked, err = ps.PublishBatch(topic, []*message.Message{keyed("b0", bad[0], "2"), keyed("g1", good[1], "3"), keyed("b1", bad[1], "5")})
	require.NoError(t, err)
	assert.Equal(t, 3, acked)

	acked, err = ps.PublishBatch(topic, []*message.Message{keyed("s", good[0], "6"), keyed("big", good[0], strings.Repeat("x", 2<<20)), keyed("t", good[0], "7")})
	assert.Equal(t, 1, acked, "a payload too large stops the batch where it is")
	assert.ErrorContains(t, err, "big")
}
