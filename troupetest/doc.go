// Package troupetest provides utilities for testing applications built on
// Troupe, as net/http/httptest does for HTTP handlers: a server on
// 127.0.0.1 to dial (NewServer), an in-memory connection with no socket at
// all (Pipe), and a Client that speaks the envelope protocol and fails the
// test, through the testing.TB it was created with, when the server does
// not answer as expected.
//
// Every wait is bounded (by a few seconds), so a missing message fails the
// test with what arrived instead of hanging it. Servers and clients are
// closed at the test's cleanup, and leave no goroutine behind.
package troupetest
