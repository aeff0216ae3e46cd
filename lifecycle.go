package fxcqrs

import (
	"context"
	"fmt"
	"sort"

	"go.uber.org/zap"
)

// Start logs what the mediator has registered: at info level the counts
// per kind, at debug level every handler. Under fx, Module calls it from
// an OnStart hook. A mediator needs no Start to serve calls: its event
// workers start on demand.
func (m *Mediator) Start(context.Context) error {
	counts := map[role]int{}
	for _, e := range m.reg.handlers {
		counts[e.role]++
	}
	events := 0
	for _, hs := range m.reg.events {
		events += len(hs)
	}
	m.log.Info("mediator started",
		zap.Int("requestHandlers", counts[roleRequest]),
		zap.Int("commandHandlers", counts[roleCommand]),
		zap.Int("streamHandlers", counts[roleStream]),
		zap.Int("eventHandlers", events),
		zap.Int("eventTypes", len(m.reg.events)),
		zap.Int("maxConcurrentEventHandlers", m.cfg.Events.limit(DefaultMaxConcurrentEventHandlers)),
		zap.Bool("sequentialEvents", m.cfg.Events.Sequential),
		zap.Bool("backgroundEvents", m.cfg.Events.Background),
		zap.Int("maxConcurrentStreamEventHandlers", m.cfg.StreamEvents.limit(DefaultMaxConcurrentStreamEventHandlers)),
		zap.Bool("sequentialStreamEvents", m.cfg.StreamEvents.Sequential),
	)
	if ce := m.log.Check(zap.DebugLevel, "handler"); ce != nil {
		for _, line := range m.table() {
			m.log.Debug("handler", zap.String("kind", line[0]), zap.String("messageType", line[1]), zap.String("handler", line[2]))
		}
	}
	return nil
}

// table lists every registration as (kind, message, handler), sorted.
func (m *Mediator) table() [][3]string {
	var rows [][3]string
	for typ, e := range m.reg.handlers {
		rows = append(rows, [3]string{e.role.String(), typeName(typ), e.name})
	}
	for typ, hs := range m.reg.events {
		for _, h := range hs {
			rows = append(rows, [3]string{roleEvent.String(), typeName(typ), h.Name})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i][1] != rows[j][1] {
			return rows[i][1] < rows[j][1]
		}
		return rows[i][0] < rows[j][0]
	})
	return rows
}

// Stop refuses new calls with ErrStopped and waits, until ctx is done, for
// the calls in flight and their events, background events included. Calls
// made from inside a call still in flight are served: they belong to it.
//
// When ctx ends first, every invocation still waiting for a slot is
// reported to its call as not started (errors.Is ErrStopped), no new one
// starts, and Stop returns an error saying how many calls were still in
// flight; handlers already running cannot be interrupted and finish on
// their own. Stop may be called again: it waits again. Under fx, Module
// calls it from an OnStop hook with fx's stop timeout.
func (m *Mediator) Stop(ctx context.Context) error {
	select {
	case <-m.eng.Stop():
	case <-ctx.Done():
		m.eng.Abort(fmt.Errorf("%w before its events ran: %w", ErrStopped, context.Cause(ctx)))
		n := m.eng.Stats().InFlight
		if n == 0 {
			break
		}
		st := m.eng.Stats()
		m.log.Warn("stop deadline passed with calls in flight: their handlers finish on their own, no new invocation starts",
			zap.Int64("calls", n),
			zap.Int("eventHandlersRunning", st.Events.Running+st.StreamEvents.Running),
			zap.Int("eventHandlersWaiting", st.Events.Waiting+st.StreamEvents.Waiting),
			zap.Error(ctx.Err()))
		return fmt.Errorf("fxcqrs: stop: %d calls still in flight: %w", n, ctx.Err())
	}
	m.eng.Wait()
	m.log.Info("mediator stopped", zap.Uint64("lateEmits", m.eng.Stats().LateEmits))
	return nil
}
