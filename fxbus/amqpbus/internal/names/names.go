// Package names holds how amqpbus names a topic's exchanges and queues
// (the names amqpbus's package doc gives), for amqpbus and for amqptest,
// which deletes them.
package names

import "strconv"

// LaneExchange is the exchange of topic's lane n: the topic's own for
// lane 0.
func LaneExchange(topic string, n int) string {
	if n == 0 {
		return topic
	}
	return topic + "._lane." + strconv.Itoa(n)
}

// QueueSuffix is what a group's queue adds to its exchange's name.
func QueueSuffix(group string) string {
	if group == "" {
		return ""
	}
	return "_" + group
}

// LanesQueue is the queue whose x-max-length records topic's number of
// lanes.
func LanesQueue(topic string) string { return topic + "._lanes" }
