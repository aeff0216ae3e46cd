package lib

type logger struct{}

func (logger) Warn(string, ...any)  {}
func (logger) Error(string, ...any) {}

func logs(l logger, topic string) {
	l.Warn("lib: broker away")
	l.Error("lib: poison message: "+topic, 1)
}
