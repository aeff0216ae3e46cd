// Package asyncapitest validates the AsyncAPI documents of fxbus/asyncapi
// against the AsyncAPI 3.0 JSON Schema, kept in testdata; a module of its
// own so that the validator, a test dependency, stays out of users'
// builds.
package asyncapitest
