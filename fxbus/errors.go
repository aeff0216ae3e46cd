package fxbus

import (
	"strconv"
	"strings"
)

// PublishError is returned beside a valid response when routed events
// could not be published: the request is done, its in-process event
// handlers ran, and these events did not leave the process. A caller tells
// it from a failed request with errors.As:
//
//	res, err := fxcqrs.Send[Receipt](ctx, m, req)
//	var pubErr *fxbus.PublishError
//	if errors.As(err, &pubErr) {
//		// res is valid; pubErr.Failures lists what was not published
//	}
//
// Without an outbox nothing retries them: see the package documentation.
type PublishError struct {
	// Failures lists each event and topic that failed, in emit order.
	Failures []PublishFailure
}

// PublishFailure is one event not published to one topic.
type PublishFailure struct {
	// Topic is where the event was to go.
	Topic string
	// Event is the event.
	Event any
	// Err is why: the marshaler's or the publisher's error.
	Err error
}

// Error lists the failures on one line.
func (e *PublishError) Error() string {
	var b strings.Builder
	b.WriteString("fxbus: ")
	b.WriteString(strconv.Itoa(len(e.Failures)))
	if len(e.Failures) == 1 {
		b.WriteString(" event not published: ")
	} else {
		b.WriteString(" events not published: ")
	}
	for i, f := range e.Failures {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.Topic)
		b.WriteString(": ")
		b.WriteString(f.Err.Error())
	}
	return b.String()
}

// Unwrap returns each failure's error.
func (e *PublishError) Unwrap() []error {
	errs := make([]error, len(e.Failures))
	for i, f := range e.Failures {
		errs[i] = f.Err
	}
	return errs
}
