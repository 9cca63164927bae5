package troupetest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: servers,
// WebSocket clients and pipes must all have stopped at cleanup.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
