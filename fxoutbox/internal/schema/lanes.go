package schema

import (
	"hash/fnv"
	"strconv"
)

// Order per key. A row whose message has a key (fxbus.KeyBy puts it in
// the fxbus.MetadataKey metadata) goes in one of its topic's lanes, by a
// stable hash of the key; a row without a key goes in lane 0, so that a
// topic nobody keys keeps its one order. The relay sends each lane in id
// order under a lease of its own: the rows of one key keep their order,
// while the lanes of one topic are shared by the relays of every replica.
// Both the hash and the lease's name are stored, so they are the schema's.

// Lane is one lane of a topic: what a relay leases and sends in order.
type Lane struct {
	Topic string
	N     int
}

// Lease is the leases table's name for the lane: the topic itself for
// lane 0 (a topic's only lane when nothing keys it, as before lanes
// existed), else the topic, "#" and the lane.
func (l Lane) Lease() string {
	if l.N == 0 {
		return l.Topic
	}
	return l.Topic + "#" + strconv.Itoa(l.N)
}

// LaneOf is the lane of a row with key among lanes: FNV-1a (32 bits) of
// the key's bytes, modulo lanes; 0 without a key or with one lane. The
// hash is part of the schema: it never changes, so that a key's rows
// written by different versions share their lane.
func LaneOf(key string, lanes int) int {
	if key == "" || lanes <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(lanes))
}
