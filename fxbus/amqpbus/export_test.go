package amqpbus

// Kill ends p as a killed process's connections end: its lanes' leases
// are neither renewed nor given back, its consumers' channels close (and
// RabbitMQ requeues what they held), nothing more is acknowledged. Close
// it afterwards.
func Kill(p *PubSub) {
	close(p.killed)
	p.subMu.Lock()
	defer p.subMu.Unlock()
	if p.subConn != nil {
		_ = p.subConn.Close()
	}
}
