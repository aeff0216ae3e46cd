package natsjs

import (
	"fmt"
	"strings"

	"github.com/fxcqrs/fxcqrs/fxbus"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
)

// headerAllowance is what Capabilities keeps of the server's max_payload
// for a message's headers (its metadata and Nats-Msg-Id): the payloads it
// states it takes are published whole.
const headerAllowance = 8 << 10

// maxPayload is the largest payload Publish takes: the server's
// max_payload less headerAllowance.
func (p *PubSub) maxPayload() int {
	return max(int(p.conn.MaxPayload())-headerAllowance, 0)
}

// Publish publishes msgs to topic, in order, each acknowledged by
// JetStream before the next is sent. topic must be provisioned (see
// Provision); a payload above Capabilities().MaxPayload is refused
// before anything is sent.
func (p *PubSub) Publish(topic string, msgs ...*message.Message) error {
	if err := p.checkPublish(topic, msgs); err != nil {
		return err
	}
	for _, msg := range msgs {
		if _, err := p.js.PublishMsg(natsMsg(p.subject(topic, msg), msg)); err != nil {
			return fmt.Errorf("natsjs: publish to %s: %w", topic, err)
		}
	}
	return nil
}

// PublishBatch publishes msgs to topic without waiting on each (JetStream's
// asynchronous publish), then waits for their acknowledgements, and
// returns how many, from the first, JetStream acknowledged: what a relay
// may delete. Messages after the first refused one may have been taken
// too; sent again, JetStream drops them as duplicates within its window.
// A message above the limit is not sent, nor any after it: those before
// it are, and the error names the limit.
func (p *PubSub) PublishBatch(topic string, msgs []*message.Message) (int, error) {
	if err := p.provisioned(topic); err != nil {
		return 0, err
	}
	send, tooLarge := msgs, error(nil)
	for i, msg := range msgs {
		if err := p.checkSize(topic, msg); err != nil {
			send, tooLarge = msgs[:i], err
			break
		}
	}
	acked, err := p.publishAsync(topic, send)
	if err != nil {
		return acked, fmt.Errorf("natsjs: publish to %s: %w", topic, err)
	}
	return acked, tooLarge
}

// checkPublish refuses, before anything is sent, a topic nobody
// provisioned and a message above the server's limit.
func (p *PubSub) checkPublish(topic string, msgs []*message.Message) error {
	if err := p.provisioned(topic); err != nil {
		return err
	}
	for _, msg := range msgs {
		if err := p.checkSize(topic, msg); err != nil {
			return err
		}
	}
	return nil
}

// checkSize refuses a message above the limit, naming it.
func (p *PubSub) checkSize(topic string, msg *message.Message) error {
	limit, server := p.maxPayload(), p.conn.MaxPayload()
	if n := len(msg.Payload); n > limit {
		return fmt.Errorf("natsjs: publish to %s: message %s has a payload of %d bytes, above the limit of %d (the server's max_payload, %d, less %d for headers)",
			topic, msg.UUID, n, limit, server, headerAllowance)
	}
	if n := len(msg.Payload) + headerSize(msg); int64(n) > server {
		return fmt.Errorf("natsjs: publish to %s: message %s has %d bytes with its headers, above the server's max_payload of %d", topic, msg.UUID, n, server)
	}
	return nil
}

// headerSize is about what msg's headers take on the wire.
func headerSize(msg *message.Message) int {
	n := len("NATS/1.0\r\n\r\n") + len(nats.MsgIdHdr) + len(msg.UUID) + len(replaySep) + 64
	for k, v := range msg.Metadata {
		n += len(k) + len(v) + 4
	}
	return n
}

func (p *PubSub) publishAsync(topic string, msgs []*message.Message) (int, error) {
	futures := make([]nats.PubAckFuture, 0, len(msgs))
	var sendErr error
	for _, msg := range msgs {
		f, err := p.js.PublishMsgAsync(natsMsg(p.subject(topic, msg), msg))
		if err != nil {
			sendErr = err
			break
		}
		futures = append(futures, f)
	}
	acked, firstErr := 0, error(nil)
	for _, f := range futures { // every future is waited for, the failed ones' too
		select {
		case <-f.Ok():
			if firstErr == nil {
				acked++
			}
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if firstErr == nil {
		firstErr = sendErr
	}
	return acked, firstErr
}

// natsMsg is msg on the wire: its payload as data, its metadata as
// headers, its id as Nats-Msg-Id for JetStream's deduplication.
func natsMsg(topic string, msg *message.Message) *nats.Msg {
	m := nats.NewMsg(topic)
	m.Data = msg.Payload
	for k, v := range msg.Metadata {
		m.Header.Set(k, v)
	}
	m.Header.Set(nats.MsgIdHdr, dedupID(msg.UUID, msg.Metadata.Get(metadataReplay)))
	return m
}

// dedupID is the Nats-Msg-Id of a message: its id, for JetStream to drop a
// duplicate publish within its window, and for a replay (see
// fxbus.MetadataReplay) the id and its replay's mark, so that JetStream
// takes the replay as new; messageID takes the mark off again.
func dedupID(id, replay string) string {
	if replay == "" {
		return id
	}
	return id + replaySep + replay
}

const replaySep = "~replay~"

// metadataReplay is fxbus.MetadataReplay.
const metadataReplay = fxbus.MetadataReplay

// metadataKey is fxbus.MetadataKey: a subscription with InOrder hands a
// key's messages over one at a time.
const metadataKey = fxbus.MetadataKey

// messageID is the message's own id, from its Nats-Msg-Id.
func messageID(hdr string) string {
	id, _, _ := strings.Cut(hdr, replaySep)
	return id
}
