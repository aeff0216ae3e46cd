package kafkabus

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Publish publishes msgs to topic, in order, and returns once the brokers
// acknowledged every one (acks=all), with the first failure's error.
func (p *PubSub) Publish(topic string, msgs ...*message.Message) error {
	_, err := p.PublishBatch(topic, msgs)
	return err
}

// PublishBatch publishes msgs to topic without waiting on each, then waits
// for every one, and returns how many, from the first, the brokers
// acknowledged (fxbus.BatchPublisher): what a relay may delete. The
// records of one batch go to several partitions (one per key) and fail
// independently; a failed record's later records on its partition fail
// with it (the idempotent producer keeps a partition's order), and
// records after the first failure that were taken are sent again by the
// relay: the inbox drops those duplicates.
func (p *PubSub) PublishBatch(topic string, msgs []*message.Message) (int, error) {
	if err := CheckTopic(topic); err != nil {
		return 0, fmt.Errorf("kafkabus: publish: %w", err)
	}
	recs := make([]*kgo.Record, 0, len(msgs))
	var tooLarge error
	for i, msg := range msgs {
		r, err := p.record(topic, msg)
		if err != nil {
			tooLarge = fmt.Errorf("kafkabus: publish to %s: message %d (%s): %w", topic, i, msg.UUID, err)
			break
		}
		recs = append(recs, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.RebalanceTimeout)
	defer cancel()
	// ProduceSync's results come in the order the brokers answered: put
	// them back in the batch's.
	errs := make(map[*kgo.Record]error, len(recs))
	for _, res := range p.prod.ProduceSync(ctx, recs...) {
		errs[res.Record] = res.Err
	}
	for i, r := range recs {
		if err := errs[r]; err != nil {
			return i, publishError(topic, err)
		}
	}
	return len(recs), tooLarge
}

func publishError(topic string, err error) error {
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("kafkabus: publish to %s: the topic does not exist (Provision creates it, or create it on the cluster): %w", topic, err)
	}
	return fmt.Errorf("kafkabus: publish to %s: %w", topic, err)
}

// record is msg on the wire: its route's key (fxbus.MetadataKey) as the
// record's key, so that a key's messages go to one partition; its payload
// as the value; its metadata as headers and its id as watermill-kafka's
// id header.
func (p *PubSub) record(topic string, msg *message.Message) (*kgo.Record, error) {
	if limit := p.cfg.MaxRecordBytes - MetadataAllowance; len(msg.Payload) > limit {
		return nil, fmt.Errorf("a payload of %d bytes is over the %d bytes a record takes (MaxRecordBytes %d less %d for the key and metadata)",
			len(msg.Payload), limit, p.cfg.MaxRecordBytes, MetadataAllowance)
	}
	r := &kgo.Record{Topic: topic, Value: msg.Payload, Headers: make([]kgo.RecordHeader, 0, len(msg.Metadata)+1)}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: idHeader, Value: []byte(msg.UUID)})
	size := len(idHeader) + len(msg.UUID)
	for k, v := range msg.Metadata {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		size += len(k) + len(v)
	}
	if key := msg.Metadata.Get(fxbus.MetadataKey); key != "" {
		r.Key = []byte(key)
		size += len(key)
	}
	if size > MetadataAllowance-recordFraming {
		return nil, fmt.Errorf("the key and metadata take %d bytes, over the %d a record keeps for them", size, MetadataAllowance-recordFraming)
	}
	return r, nil
}

// recordFraming is more than a record batch of one record takes beside
// its key, value and headers.
const recordFraming = 1 << 10

// toMessage is a consumed record as a Watermill message. A record that
// another producer wrote without an id header gets one from where it
// lies (topic, partition, offset), so that it is handled once like any
// other: it never fails to become a message, and a payload the bus
// cannot decode is the bus's to dead-letter.
func toMessage(r *kgo.Record) *message.Message {
	id := ""
	md := make(message.Metadata, len(r.Headers))
	for _, h := range r.Headers {
		if h.Key == idHeader {
			id = string(h.Value)
			continue
		}
		md[h.Key] = string(h.Value)
	}
	if id == "" {
		id = fmt.Sprintf("kafka:%s/%d/%d", r.Topic, r.Partition, r.Offset)
	}
	if _, ok := md[fxbus.MetadataKey]; !ok && len(r.Key) > 0 {
		md[fxbus.MetadataKey] = string(r.Key) // a foreign producer's key keeps its order too
	}
	msg := message.NewMessage(id, r.Value)
	msg.Metadata = md
	return msg
}
