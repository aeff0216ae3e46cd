// Package durable holds the benchmarks of fxcqrs's durable path (the
// outbox, its relay and the inbox) against what a team would otherwise
// use, measured in the same run on the same servers: Watermill's
// forwarder over watermill-sql, and a Watermill router that keeps its own
// inbox. It is a test-only package of the benchmarks module, so that
// watermill-sql never reaches the library's users.
//
// They need PostgreSQL and NATS JetStream (FXCQRS_POSTGRES_URL,
// FXCQRS_NATS_URL) and skip without them. `make bench-figures
// SUITES=durable` runs them into results/durable.txt, from which the
// performance page's figures are computed
// (https://github.com/fxcqrs/fxcqrs/blob/main/docs/performance.md#against-what-a-team-would-otherwise-run).
package durable
