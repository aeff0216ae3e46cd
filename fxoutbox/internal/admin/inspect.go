package admin

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// What the outbox stores, for metrics, health checks and the repair
// tools. Each read is one statement on the database, in no transaction;
// the cost of each is said on its method.

// TopicBacklog is what waits in the outbox for one topic.
type TopicBacklog struct {
	// Topic is the topic, or DeliveryConfig.Topic for the rows of this
	// service's own delivery.
	Topic string
	// Rows is the rows waiting, due or not.
	Rows int
	// Due is the rows due now: all of them, but for rows of this
	// service's own delivery that wait for their next attempt.
	Due int
	// Lag is how long the oldest due row has waited since it was written
	// (a scheduled one: since it fell due), by the outbox's clock: how far
	// the relay is behind on the topic. 0 when none is due.
	Lag time.Duration
}

// Backlog returns every topic's rows waiting in the outbox, by topic. It
// reads the whole outbox table (one aggregate over its rows): for a
// dashboard or a metric collected every few seconds, not for a check per
// request (see Lag).
func (a *Admin) Backlog(ctx context.Context) ([]TopicBacklog, error) {
	now := a.now().UnixNano()
	rows, err := a.db.QueryContext(ctx, a.q.Backlog, now, now)
	if err != nil {
		return nil, fmt.Errorf("fxoutbox: backlog: %w", err)
	}
	defer rows.Close()
	var out []TopicBacklog
	for rows.Next() {
		var b TopicBacklog
		var oldest sql.NullInt64
		if err := rows.Scan(&b.Topic, &b.Rows, &b.Due, &oldest); err != nil {
			return nil, fmt.Errorf("fxoutbox: backlog: %w", err)
		}
		if oldest.Valid && oldest.Int64 > 0 && oldest.Int64 < now {
			b.Lag = time.Duration(now - oldest.Int64)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// Lag returns how long the oldest row that is due has waited in the
// outbox, over every topic, by the outbox's clock (0: none waits): the
// relay's lag. It reads the first row of each topic by the (topic, id)
// index (one loose index scan over the topics, and a row per topic), so
// it costs per topic, not per row: a health check can call it.
func (a *Admin) Lag(ctx context.Context) (time.Duration, error) {
	now := a.now().UnixNano()
	var oldest sql.NullInt64
	if err := a.db.QueryRowContext(ctx, a.q.Lag, now).Scan(&oldest); err != nil {
		return 0, fmt.Errorf("fxoutbox: lag: %w", err)
	}
	if !oldest.Valid || oldest.Int64 <= 0 || oldest.Int64 >= now {
		return 0, nil
	}
	return time.Duration(now - oldest.Int64), nil
}

// TopicDeadLetters is the dead letters of one topic.
type TopicDeadLetters struct {
	Topic string
	// Rows is how many there are.
	Rows int
	// Last is when the newest failed, by the outbox's clock (zero for
	// letters older than the schema's version 4, which recorded no such
	// time).
	Last time.Time
}

// DeadLetters returns how many dead letters each topic has, the outbox's
// and the inbound ones (those not discarded): one aggregate over each
// table.
func (a *Admin) DeadLetters(ctx context.Context) ([]TopicDeadLetters, error) {
	byTopic := map[string]*TopicDeadLetters{}
	var topics []string
	for _, q := range []string{a.q.DeadByTopic, a.q.InboundDeadByTopic} {
		rows, err := a.db.QueryContext(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("fxoutbox: dead letters: %w", err)
		}
		for rows.Next() {
			var topic string
			var n int
			var last int64
			if err := rows.Scan(&topic, &n, &last); err != nil {
				_ = rows.Close()
				return nil, fmt.Errorf("fxoutbox: dead letters: %w", err)
			}
			d := byTopic[topic]
			if d == nil {
				d = &TopicDeadLetters{Topic: topic}
				byTopic[topic] = d
				topics = append(topics, topic)
			}
			d.Rows += n
			if t := time.Unix(0, last); last > 0 && t.After(d.Last) {
				d.Last = t
			}
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("fxoutbox: dead letters: %w", err)
		}
	}
	slices.Sort(topics)
	out := make([]TopicDeadLetters, len(topics))
	for i, t := range topics {
		out[i] = *byTopic[t]
	}
	return out, nil
}

// ScheduledSummary is what waits for its time.
type ScheduledSummary struct {
	// Rows is the scheduled messages not yet due, or due and not yet moved
	// into the outbox.
	Rows int
	// Next is the earliest due time among them (zero: none).
	Next time.Time
}

// Scheduled returns how many messages are scheduled and when the next is
// due: one aggregate over the scheduled table.
func (a *Admin) Scheduled(ctx context.Context) (ScheduledSummary, error) {
	var s ScheduledSummary
	var next sql.NullInt64
	if err := a.db.QueryRowContext(ctx, a.q.ScheduledSummary).Scan(&s.Rows, &next); err != nil {
		return s, fmt.Errorf("fxoutbox: scheduled: %w", err)
	}
	if next.Valid {
		s.Next = time.Unix(0, next.Int64)
	}
	return s, nil
}
