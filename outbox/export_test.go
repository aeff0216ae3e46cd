package fxoutbox

// SetWake replaces what a commit of o's unit of work calls to wake the
// relay, for tests.
func SetWake(o *Outbox, wake func()) { o.uow.wake = wake }
