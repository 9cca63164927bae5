package serve_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/internal/serve"
)

// TestFromLookupLimitDefaults checks that a server configured from an empty
// environment is protected: a connection cap, a handshake deadline and a
// per-session rate limit are all on.
func TestFromLookupLimitDefaults(t *testing.T) {
	c := mustLoad(t, map[string]string{})
	if c.MaxConnections != 10000 {
		t.Errorf("MaxConnections = %d, want 10000", c.MaxConnections)
	}
	if c.HandshakeTimeout != 10*time.Second {
		t.Errorf("HandshakeTimeout = %v, want 10s", c.HandshakeTimeout)
	}
	if c.RateLimit != 100 || c.RateBurst != 200 {
		t.Errorf("RateLimit, RateBurst = %v, %d; want 100, 200", c.RateLimit, c.RateBurst)
	}
}

func TestFromLookupLimits(t *testing.T) {
	c := mustLoad(t, map[string]string{
		"WEBSOCKET_MAX_CONNECTIONS":   " 500 ",
		"WEBSOCKET_HANDSHAKE_TIMEOUT": "2500ms",
		"WEBSOCKET_RATE_LIMIT":        "12.5",
		"WEBSOCKET_RATE_BURST":        "40",
	})
	if c.MaxConnections != 500 {
		t.Errorf("MaxConnections = %d, want 500", c.MaxConnections)
	}
	if c.HandshakeTimeout != 2500*time.Millisecond {
		t.Errorf("HandshakeTimeout = %v, want 2.5s", c.HandshakeTimeout)
	}
	if c.RateLimit != 12.5 || c.RateBurst != 40 {
		t.Errorf("RateLimit, RateBurst = %v, %d; want 12.5, 40", c.RateLimit, c.RateBurst)
	}
	// Unset limits keep their defaults beside the ones given.
	if c.MaxMessageSize != 65536 || c.PingInterval != 30*time.Second {
		t.Errorf("unset settings changed: MaxMessageSize %d, PingInterval %v", c.MaxMessageSize, c.PingInterval)
	}

	// Bare seconds, as for the other durations.
	if c := mustLoad(t, map[string]string{"WEBSOCKET_HANDSHAKE_TIMEOUT": "3"}); c.HandshakeTimeout != 3*time.Second {
		t.Errorf("WEBSOCKET_HANDSHAKE_TIMEOUT=3 gave %v, want 3s", c.HandshakeTimeout)
	}
	// A rate limit alone keeps the default burst.
	if c := mustLoad(t, map[string]string{"WEBSOCKET_RATE_LIMIT": "5"}); c.RateLimit != 5 || c.RateBurst != 200 {
		t.Errorf("WEBSOCKET_RATE_LIMIT=5 gave RateLimit %v, RateBurst %d; want 5, 200", c.RateLimit, c.RateBurst)
	}
}

// TestFromLookupRateLimitZeroDisables checks that WEBSOCKET_RATE_LIMIT=0
// turns the limit off: Config spells that as a negative RateLimit (zero
// would mean "use the default" and turn it back on), and a handler built
// from it keeps it off.
func TestFromLookupRateLimitZeroDisables(t *testing.T) {
	for _, zero := range []string{"0", " 0 ", "0.0"} {
		c := mustLoad(t, map[string]string{"WEBSOCKET_RATE_LIMIT": zero})
		if c.RateLimit >= 0 {
			t.Errorf("WEBSOCKET_RATE_LIMIT=%q gave RateLimit %v, want negative (no limit)", zero, c.RateLimit)
		}
		if again := c.WithDefaults(); again.RateLimit != c.RateLimit {
			t.Errorf("WEBSOCKET_RATE_LIMIT=%q: WithDefaults turned RateLimit %v into %v", zero, c.RateLimit, again.RateLimit)
		}
	}

	sys := session.NewSystem(slog.New(slog.DiscardHandler))
	defer sys.Shutdown()
	h, err := serve.NewHandler(sys, mustLoad(t, map[string]string{"WEBSOCKET_RATE_LIMIT": "0"}), serve.Hooks{})
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	if got := h.Config().RateLimit; got >= 0 {
		t.Errorf("handler built with WEBSOCKET_RATE_LIMIT=0 has RateLimit %v, want negative (no limit)", got)
	}
}

func TestFromLookupRejectsMalformedLimits(t *testing.T) {
	cases := map[string][]string{
		"WEBSOCKET_MAX_CONNECTIONS":   {"abc", "-1", "10x", "", "1.5", "1e3"},
		"WEBSOCKET_HANDSHAKE_TIMEOUT": {"abc", "-1", "-5s", "10x", "", "NaN", "Inf", "1e300"},
		"WEBSOCKET_RATE_LIMIT":        {"abc", "-1", "-0.5", "NaN", "Inf", "-Inf", "", "10/s"},
		"WEBSOCKET_RATE_BURST":        {"abc", "-1", "0", "1.5", "", "10x"},
	}
	for name, values := range cases {
		for _, v := range values {
			c, err := serve.FromLookup(lookup(map[string]string{
				name: v,
				// A valid variable beside the bad one must not hide the error.
				"WEBSOCKET_MAX_MESSAGE_SIZE": "4096",
			}))
			if err == nil {
				t.Errorf("%s=%q: no error (MaxConnections %d, HandshakeTimeout %v, RateLimit %v, RateBurst %d), want one",
					name, v, c.MaxConnections, c.HandshakeTimeout, c.RateLimit, c.RateBurst)
				continue
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%q: error %q does not name the variable", name, v, err)
			}
		}
	}
}

func TestFromEnvReadsLimits(t *testing.T) {
	t.Setenv("WEBSOCKET_MAX_CONNECTIONS", "3")
	t.Setenv("WEBSOCKET_HANDSHAKE_TIMEOUT", "1s")
	t.Setenv("WEBSOCKET_RATE_LIMIT", "50")
	t.Setenv("WEBSOCKET_RATE_BURST", "10")
	c, err := serve.FromEnv()
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	if c.MaxConnections != 3 || c.HandshakeTimeout != time.Second || c.RateLimit != 50 || c.RateBurst != 10 {
		t.Fatalf("FromEnv gave MaxConnections %d, HandshakeTimeout %v, RateLimit %v, RateBurst %d; want 3, 1s, 50, 10",
			c.MaxConnections, c.HandshakeTimeout, c.RateLimit, c.RateBurst)
	}

	t.Setenv("WEBSOCKET_RATE_LIMIT", "NaN")
	if _, err := serve.FromEnv(); err == nil || !strings.Contains(err.Error(), "WEBSOCKET_RATE_LIMIT") {
		t.Fatalf("FromEnv with WEBSOCKET_RATE_LIMIT=NaN: %v, want an error naming it", err)
	}
}
