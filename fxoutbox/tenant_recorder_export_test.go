package fxoutbox

// NewDeadLetterRecorder is the bus's recorder and parking that Module
// provides, for tests that drive it without a bus.
var NewDeadLetterRecorder = newDeadLetterRecorder
