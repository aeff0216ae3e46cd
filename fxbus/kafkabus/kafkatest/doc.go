// Package kafkatest holds kafkabus's tests, run against franz-go's
// in-process Kafka (kfake: several brokers, partitions, consumer groups).
// It is a module of its own so that kfake never enters kafkabus's go.mod,
// and with it the users' downloads.
package kafkatest
