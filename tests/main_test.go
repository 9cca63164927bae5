// Package tests holds Troupe's end-to-end tests: real WebSocket clients
// (github.com/coder/websocket) talking to a troupe.Server served on
// 127.0.0.1, checking what an application would see on both ends of the
// connection.
package tests

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// server is shut down and every client closed, so a leftover goroutine is a
// session, writer, heartbeat or room that did not stop.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
