package main

import (
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxbus/protobuf"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// decodedPayload is d's payload for people (protobuf.Show): a protobuf
// payload of a message type this program registers as JSON, text as it
// is, other bytes as a hex dump. A command line built with a service's
// generated packages imported (blank imports register their types)
// decodes that service's protobuf payloads.
func decodedPayload(d fxoutbox.DeadLetter) (string, bool) {
	return protobuf.Show(d.Name, d.Metadata[fxbus.MetadataContentType], d.Payload)
}

// shownPayload is decodedPayload's text.
func shownPayload(d fxoutbox.DeadLetter) string {
	text, _ := decodedPayload(d)
	return text
}
