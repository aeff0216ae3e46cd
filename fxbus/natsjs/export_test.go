package natsjs

// Kill closes p's connection as a killed process's would end: nothing is
// given back, nothing more is acknowledged. Close it afterwards.
func Kill(p *PubSub) { p.conn.Close() }

// StreamName is the stream a topic is kept in.
func StreamName(topic string) string { return streamName(topic) }
