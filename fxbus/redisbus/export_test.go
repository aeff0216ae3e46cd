package redisbus

// KeepHeld resets the idle time of what p's subscriptions hold, as they
// do every third of MaxIdleTime.
func KeepHeld(p *PubSub) {
	p.streamsMu.Lock()
	defer p.streamsMu.Unlock()
	for s := range p.streams {
		s.claimHeld(s.ctx)
	}
}
