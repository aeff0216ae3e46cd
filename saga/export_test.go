package fxsaga

// Driving is how many sagas r drives now.
func Driving(r *Runner) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.driving)
}
