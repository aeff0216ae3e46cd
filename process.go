package fxcqrs

import (
	"github.com/fxcqrs/fxcqrs/internal/engine"
)

// How a Send or Exec ends: what its handler emitted is processed (handed
// to the Forwarder, then to the engine per Config.Events) or discarded,
// the observer hears, and the call leaves flight. Stream items and
// Publish process their events through the same process.

// end ends a Send or Exec whose handler returned err: the events it
// emitted are processed per Config.Events when err is nil and discarded
// otherwise; the observer, if any, hears; the call leaves flight. It
// returns what the caller receives.
func (m *Mediator) end(f *engine.Frame, err error, o *observation) error {
	if o != nil {
		return m.endEvents(f, f.Seal(), err, o)
	}
	if buf := m.eng.End(f); buf != nil {
		return m.endEvents(f, buf, err, nil)
	}
	return err // the common case: End has left
}

// endEvents is end for a call that emitted events or is observed.
func (m *Mediator) endEvents(f *engine.Frame, buf *engine.Buffer, err error, o *observation) error {
	if err != nil {
		buf.Release()
	} else if buf != nil {
		err = m.process(f, engine.Events, buf)
	}
	o.finish(f, err)
	m.eng.Leave(f)
	return err
}

// process hands what a call's handler emitted to the Forwarder, if any,
// then processes it in-process on lane, and releases buf. It returns what
// the caller receives beside a valid response.
func (m *Mediator) process(f *engine.Frame, ln engine.Lane, buf *engine.Buffer) error {
	var fwdErr error
	if m.fwd != nil && !buf.Forwarded() {
		fwdErr = m.fwd.forward(f.Context, buf.Records())
	}
	err := eventError(m.eng.Process(f, ln, buf.Records()))
	buf.Release()
	return beside(err, fwdErr)
}
