package fxoutbox

// RelayPasses returns how many passes o's relay has run (Passes adds the
// schedule promoter's rounds), for the tests of its fair shares, which
// count in passes.
func RelayPasses(o *Outbox) uint64 { return o.relay.Passes() }
