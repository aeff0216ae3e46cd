// Package cloudeventstest proves fxbus's CloudEvents against the
// CloudEvents Go SDK (github.com/cloudevents/sdk-go/v2) over NATS
// JetStream, RabbitMQ and Kafka: events the SDK encodes are handled by
// fxcqrs subscriptions, and events fxcqrs routes decode with the SDK to
// the same attributes. It is a module of its own so that the SDK, a test
// dependency, never reaches fxbus's users.
package cloudeventstest
