package bustest

import (
	"context"
	"errors"
	"net"
	"sync"
)

// Severable dials an adapter's connections so that Sever can cut them all
// at once, as a killed process's are, and refuses to dial again after:
// give its Dial or DialContext to the adapter's client in Adapter.Open
// (nats.SetCustomDialer, redis.Options.Dialer) and call Sever from
// Adapter.Abandon. The broker sees the connections drop with nothing
// acknowledged or nacked; the client's reconnects fail.
type Severable struct {
	mu      sync.Mutex
	dialer  net.Dialer
	conns   []net.Conn
	severed bool
}

// errSevered is what a Severable's dial returns after Sever.
var errSevered = errors.New("bustest: the connection was severed, as a killed process's")

// Dial dials address on network, unless Sever was called.
func (s *Severable) Dial(network, address string) (net.Conn, error) {
	return s.DialContext(context.Background(), network, address)
}

// DialContext dials address on network, unless Sever was called.
func (s *Severable) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	s.mu.Lock()
	severed := s.severed
	s.mu.Unlock()
	if severed {
		return nil, errSevered
	}
	c, err := s.dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.severed {
		_ = c.Close()
		return nil, errSevered
	}
	s.conns = append(s.conns, c)
	return c, nil
}

// Sever closes every connection dialed, and refuses to dial more.
func (s *Severable) Sever() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.severed = true
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
}
