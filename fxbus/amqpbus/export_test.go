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

// Lose ends p as a lost host's process ends, for RabbitMQ too: its lanes'
// leases are neither renewed nor given back, and nothing is closed (the
// test's Config.Dial makes its connections go silent). Close it
// afterwards.
func Lose(p *PubSub) { close(p.killed) }
