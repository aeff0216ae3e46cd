// Package kafkatest holds kafkabus's tests, run against franz-go's
// in-process Kafka (kfake: three brokers, several partitions, consumer
// groups), so that `make test` runs all of them on a machine without
// Kafka. It is a module of its own so that kfake never enters kafkabus's
// go.mod, and with it the users' downloads.
//
//   - kafkabus_test.go, subscribe_test.go, module_test.go: publishing
//     (keys, batches, limits, provisioning), consuming (order per key,
//     InFlight, offsets, restarts, a cooperative group of three members
//     joining and leaving, revokes), the fx module through the bus.
//
//   - conformance_test.go: the broker conformance suite (bustest.Run).
//
//   - crash_test.go: TestCrash, PostgreSQL and kfake in the test process,
//     the relaying producer and the consumer killed with SIGKILL as child
//     processes (it skips without PostgreSQL, naming FXCQRS_POSTGRES_URL).
//
//   - bench_test.go: the relay's drain and the consumer with the inbox,
//     each against bare franz-go in the same run:
//
//     go test -run '^$' -bench 'RelayDrain|Consume|Conformance' -benchtime 3000x -benchmem .
package kafkatest
