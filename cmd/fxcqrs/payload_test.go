package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxoutbox/outboxtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// dead show decodes a protobuf payload of a registered type, and shows
// bytes it cannot decode as a hex dump.
func TestDeadShowBinaryPayloads(t *testing.T) {
	d := outboxtest.Open(t, fxoutbox.SQLite)
	pb, err := proto.Marshal(wrapperspb.String("fragile"))
	require.NoError(t, err)
	for _, row := range []struct {
		id       int
		payload  []byte
		metadata string
	}{
		{1, pb, `{"name":"StringValue","content_type":"application/protobuf"}`},
		{2, []byte{0xff, 0x00, 0x01}, `{"name":"Unknown","content_type":"application/protobuf"}`},
	} {
		_, err := d.DB.Exec(d.Dialect.Rebind("INSERT INTO fxcqrs_outbox_dead (id, topic, message_id, payload, metadata, error, failed_ns) VALUES (?, 'labels', 'm', ?, ?, 'refused', ?)"),
			row.id, row.payload, row.metadata, time.Now().UnixNano())
		require.NoError(t, err)
	}
	cli := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		require.NoError(t, run(append([]string{"-dialect", d.Dialect.String(), "-dsn", d.DSN}, args...), &out), "fxcqrs %v", args)
		return out.String()
	}
	assert.Contains(t, cli("dead", "show", "1"), "payload:\n\"fragile\"\n")
	assert.Contains(t, cli("dead", "show", "2"), "00000000  ff 00 01")
	var shown struct {
		PayloadText string `json:"payloadText"`
	}
	require.NoError(t, json.Unmarshal([]byte(cli("-json", "dead", "show", "1")), &shown))
	assert.Equal(t, `"fragile"`, shown.PayloadText)
}
