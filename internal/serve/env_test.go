package serve_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/serve"
)

// lookup serves an environment from a map, as FromLookup expects.
func lookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

func mustLoad(t *testing.T, env map[string]string) serve.Config {
	t.Helper()
	c, err := serve.FromLookup(lookup(env))
	if err != nil {
		t.Fatalf("FromLookup(%v): %v", env, err)
	}
	return c
}

func TestFromLookupDefaults(t *testing.T) {
	c := mustLoad(t, map[string]string{"UNRELATED": "1"})

	if c.PingInterval != 30*time.Second {
		t.Errorf("PingInterval = %v, want 30s", c.PingInterval)
	}
	if c.AutoPingPong == nil || !*c.AutoPingPong {
		t.Errorf("AutoPingPong = %v, want true", c.AutoPingPong)
	}
	if c.PongTimeout != 15*time.Second {
		t.Errorf("PongTimeout = %v, want 15s", c.PongTimeout)
	}
	if c.IdleTimeout != 60*time.Second {
		t.Errorf("IdleTimeout = %v, want 60s", c.IdleTimeout)
	}
	if c.MaxMessageSize != 65536 {
		t.Errorf("MaxMessageSize = %d, want 65536", c.MaxMessageSize)
	}
	if c.WriteTimeout != 10*time.Second {
		t.Errorf("WriteTimeout = %v, want 10s", c.WriteTimeout)
	}
	if c.MaxQueuedMessages != 1024 || c.MaxQueuedBytes != 4<<20 {
		t.Errorf("queue limits = %d messages, %d bytes; want 1024, 4 MiB", c.MaxQueuedMessages, c.MaxQueuedBytes)
	}
	if len(c.OriginPatterns) != 0 {
		t.Errorf("OriginPatterns = %q, want none", c.OriginPatterns)
	}
	if c.Logger == nil {
		t.Error("Logger is nil; the defaults should provide one")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestFromLookupDurations(t *testing.T) {
	values := []struct {
		in   string
		want time.Duration
	}{
		{"30s", 30 * time.Second},
		{"1m30s", 90 * time.Second},
		{"500ms", 500 * time.Millisecond},
		{"45", 45 * time.Second},
		{"2.5", 2500 * time.Millisecond},
		{" 20s ", 20 * time.Second},
		{"7\n", 7 * time.Second},
	}
	fields := map[string]func(serve.Config) time.Duration{
		"WEBSOCKET_PING_INTERVAL": func(c serve.Config) time.Duration { return c.PingInterval },
		"WEBSOCKET_PONG_TIMEOUT":  func(c serve.Config) time.Duration { return c.PongTimeout },
		"WEBSOCKET_IDLE_TIMEOUT":  func(c serve.Config) time.Duration { return c.IdleTimeout },
		"WEBSOCKET_WRITE_TIMEOUT": func(c serve.Config) time.Duration { return c.WriteTimeout },
	}
	for name, field := range fields {
		for _, v := range values {
			c := mustLoad(t, map[string]string{name: v.in})
			if got := field(c); got != v.want {
				t.Errorf("%s=%q gave %v, want %v", name, v.in, got, v.want)
			}
		}
	}
}

func TestFromLookupZeroDisablesTimers(t *testing.T) {
	for _, zero := range []string{"0", "0s", "0.0"} {
		c := mustLoad(t, map[string]string{
			"WEBSOCKET_IDLE_TIMEOUT":  zero,
			"WEBSOCKET_PING_INTERVAL": zero,
		})
		// Config spells "disabled" as a negative duration; zero would mean
		// "use the default" and turn the timer back on.
		if c.IdleTimeout >= 0 {
			t.Errorf("WEBSOCKET_IDLE_TIMEOUT=%q gave IdleTimeout %v, want negative (disabled)", zero, c.IdleTimeout)
		}
		if c.PingInterval >= 0 {
			t.Errorf("WEBSOCKET_PING_INTERVAL=%q gave PingInterval %v, want negative (disabled)", zero, c.PingInterval)
		}
	}
}

func TestFromLookupIntegers(t *testing.T) {
	c := mustLoad(t, map[string]string{
		"WEBSOCKET_MAX_MESSAGE_SIZE":    "1048576",
		"WEBSOCKET_SEND_QUEUE_MESSAGES": " 16 ",
		"WEBSOCKET_SEND_QUEUE_BYTES":    "2048",
	})
	if c.MaxMessageSize != 1048576 || c.MaxQueuedMessages != 16 || c.MaxQueuedBytes != 2048 {
		t.Fatalf("got MaxMessageSize=%d MaxQueuedMessages=%d MaxQueuedBytes=%d, want 1048576, 16, 2048",
			c.MaxMessageSize, c.MaxQueuedMessages, c.MaxQueuedBytes)
	}
	// Variables left unset keep their defaults beside the ones given.
	if c.PingInterval != 30*time.Second || c.IdleTimeout != 60*time.Second {
		t.Fatalf("unset durations changed: ping %v idle %v", c.PingInterval, c.IdleTimeout)
	}
}

func TestFromLookupAutoPingPong(t *testing.T) {
	for in, want := range map[string]bool{"true": true, "false": false, "1": true, "0": false, "FALSE": false, " true ": true} {
		c := mustLoad(t, map[string]string{"WEBSOCKET_AUTO_PING_PONG": in})
		if c.AutoPingPong == nil || *c.AutoPingPong != want {
			t.Errorf("WEBSOCKET_AUTO_PING_PONG=%q gave %v, want %v", in, c.AutoPingPong, want)
		}
	}
}

func TestFromLookupAllowedOrigins(t *testing.T) {
	c := mustLoad(t, map[string]string{
		"WEBSOCKET_ALLOWED_ORIGINS": " app.example.com, *.example.org ,,localhost:3000 , ",
	})
	want := []string{"app.example.com", "*.example.org", "localhost:3000"}
	if !slices.Equal(c.OriginPatterns, want) {
		t.Fatalf("OriginPatterns = %q, want %q", c.OriginPatterns, want)
	}

	c = mustLoad(t, map[string]string{"WEBSOCKET_ALLOWED_ORIGINS": ""})
	if len(c.OriginPatterns) != 0 {
		t.Fatalf("empty WEBSOCKET_ALLOWED_ORIGINS gave %q, want none", c.OriginPatterns)
	}
}

func TestFromLookupRejectsMalformedValues(t *testing.T) {
	durations := []string{
		"WEBSOCKET_PING_INTERVAL", "WEBSOCKET_PONG_TIMEOUT",
		"WEBSOCKET_IDLE_TIMEOUT", "WEBSOCKET_WRITE_TIMEOUT",
	}
	integers := []string{
		"WEBSOCKET_MAX_MESSAGE_SIZE", "WEBSOCKET_SEND_QUEUE_MESSAGES", "WEBSOCKET_SEND_QUEUE_BYTES",
	}
	type bad struct{ name, value string }
	var cases []bad
	for _, name := range durations {
		for _, v := range []string{"abc", "-5", "-5s", "10x", "", "1h30", "s"} {
			cases = append(cases, bad{name, v})
		}
	}
	for _, name := range integers {
		for _, v := range []string{"abc", "-5", "10x", "", "0", "1.5", "1e3"} {
			cases = append(cases, bad{name, v})
		}
	}
	for _, v := range []string{"maybe", "", "yes"} {
		cases = append(cases, bad{"WEBSOCKET_AUTO_PING_PONG", v})
	}

	for _, tc := range cases {
		_, err := serve.FromLookup(lookup(map[string]string{
			tc.name: tc.value,
			// A valid variable beside the bad one must not hide the error.
			"WEBSOCKET_ALLOWED_ORIGINS": "example.com",
		}))
		if err == nil {
			t.Errorf("%s=%q: no error, want one (a typo must not fall back to the default)", tc.name, tc.value)
			continue
		}
		if !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s=%q: error %q does not name the variable", tc.name, tc.value, err)
		}
	}
}

// Numbers that parse as floats but fit no time.Duration must not wrap
// around into a huge negative duration, which Config reads as "disabled".
func TestFromLookupRejectsUnrepresentableSeconds(t *testing.T) {
	for _, name := range []string{"WEBSOCKET_PING_INTERVAL", "WEBSOCKET_IDLE_TIMEOUT", "WEBSOCKET_PONG_TIMEOUT", "WEBSOCKET_WRITE_TIMEOUT"} {
		for _, v := range []string{"NaN", "Inf", "+Inf", "1e300", "1e400", "9223372036.854776"} {
			c, err := serve.FromLookup(lookup(map[string]string{name: v}))
			if err == nil {
				t.Errorf("%s=%q: no error (PingInterval %v, IdleTimeout %v), want one naming the variable",
					name, v, c.PingInterval, c.IdleTimeout)
				continue
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%q: error %q does not name the variable", name, v, err)
			}
		}
	}
}

func TestFromEnvReadsProcessEnvironment(t *testing.T) {
	t.Setenv("WEBSOCKET_IDLE_TIMEOUT", "90s")
	t.Setenv("WEBSOCKET_MAX_MESSAGE_SIZE", "4096")
	t.Setenv("WEBSOCKET_AUTO_PING_PONG", "false")
	c, err := serve.FromEnv()
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	if c.IdleTimeout != 90*time.Second || c.MaxMessageSize != 4096 || c.AutoPingPong == nil || *c.AutoPingPong {
		t.Fatalf("FromEnv gave idle %v, max size %d, auto ping %v", c.IdleTimeout, c.MaxMessageSize, c.AutoPingPong)
	}

	t.Setenv("WEBSOCKET_PING_INTERVAL", "soon")
	if _, err := serve.FromEnv(); err == nil || !strings.Contains(err.Error(), "WEBSOCKET_PING_INTERVAL") {
		t.Fatalf("FromEnv with WEBSOCKET_PING_INTERVAL=soon: %v, want an error naming it", err)
	}
}
