package hub_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: a room,
// session writer or actor that outlives its Manager is a leak in production.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
