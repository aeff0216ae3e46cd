package protobuf

import (
	"encoding/hex"
	"mime"
	"unicode/utf8"
)

// Show renders a stored payload for people, as the console and the
// command line show a dead letter's: a protobuf payload (contentType
// "application/protobuf") as JSON when the program registers its message
// type (see [Decode]), UTF-8 text as it is, and any other bytes as a hex
// dump. decoded says whether a protobuf payload was decoded. The result
// is untrusted input: escape it where it is shown.
func Show(name, contentType string, payload []byte) (text string, decoded bool) {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && mt == ContentType {
		if js, err := Decode(name, payload); err == nil {
			return string(js), true
		}
	}
	if utf8.Valid(payload) {
		return string(payload), false
	}
	return hex.Dump(payload), false
}
