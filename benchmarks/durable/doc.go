// Package durable holds the benchmarks of fxcqrs's durable path (the
// outbox, its relay and the inbox) against what a team would otherwise
// use, measured in the same run on the same servers: Watermill's
// forwarder over watermill-sql, and a Watermill router that keeps its own
// inbox. It is a test-only package of the benchmarks module, so that
// watermill-sql never reaches the library's users.
//
// They need PostgreSQL and NATS JetStream (FXCQRS_POSTGRES_URL,
// FXCQRS_NATS_URL) and skip without them:
//
//	go test -run '^$' -bench . -benchtime 20000x ./durable
package durable
