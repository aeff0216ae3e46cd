package fxconsole

import (
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/protobuf"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// shownPayload is a dead letter's payload on its page (protobuf.Show): a
// protobuf payload of a message type the program registers (the service's
// own generated packages, when the console runs inside it) as JSON, text
// as it is, other bytes as a hex dump; the template escapes it.
func shownPayload(d fxoutbox.DeadLetter) string {
	text, _ := protobuf.Show(d.Name, d.Metadata[fxbus.MetadataContentType], d.Payload)
	return text
}
