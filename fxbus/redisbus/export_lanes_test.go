package redisbus

// Kill closes p's client as a killed process's would end: no lease is
// renewed or given back, nothing more is acknowledged. Close it
// afterwards.
func Kill(p *PubSub) { _ = p.client.Close() }
