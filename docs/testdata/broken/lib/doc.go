// Package lib is a fixture.
//
// See https://github.com/fxcqrs/fxcqrs/blob/main/docs/gone.md, a page that is not there,
// and https://github.com/fxcqrs/fxcqrs/blob/main/docs/page.md#nowhere; but https://github.com/fxcqrs/fxcqrs/blob/main/docs/page.md#page is fine.
package lib
