module github.com/fxcqrs/fxcqrs/docs

go 1.24.0
