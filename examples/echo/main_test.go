package main

import (
	"strings"
	"testing"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/troupetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestEchoReadsItsSettingsFromTheEnvironment checks that the echo server
// takes WEBSOCKET_* from the environment like every other example: a
// message above the default size limit (64 KiB) is echoed once
// WEBSOCKET_MAX_MESSAGE_SIZE raises it, and closes the connection with
// 1009 without it.
func TestEchoReadsItsSettingsFromTheEnvironment(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	serve := func(t *testing.T) *troupetest.Client {
		settings, err := troupe.SettingsFromEnv()
		if err != nil {
			t.Fatal(err)
		}
		srv, err := newServer(settings)
		if err != nil {
			t.Fatal(err)
		}
		return troupetest.NewServer(t, srv).Dial(t)
	}
	t.Run("raised", func(t *testing.T) {
		t.Setenv("WEBSOCKET_MAX_MESSAGE_SIZE", "200000")
		c := serve(t)
		c.Send("big", big)
		var got string
		c.Expect("big", &got)
		if got != big {
			t.Fatalf("echoed %d bytes, want the %d sent", len(got), len(big))
		}
	})
	t.Run("default", func(t *testing.T) {
		c := serve(t)
		c.Send("big", big)
		if code, _ := c.ExpectClose(); code != troupe.CloseMessageTooBig {
			t.Fatalf("close %d, want %d for a message over the default limit", code, troupe.CloseMessageTooBig)
		}
	})
}
