package troupe

import (
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/serve"
)

// lookup serves an environment from a map, as settingsFromLookup expects.
func lookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

func mustLoad(t *testing.T, env map[string]string) Settings {
	t.Helper()
	s, err := settingsFromLookup(lookup(env))
	if err != nil {
		t.Fatalf("settingsFromLookup(%v): %v", env, err)
	}
	return s
}

// inEffect returns the transport settings a server built from cfg runs
// with, defaults applied.
func inEffect(t *testing.T, cfg Config) serve.Config {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer srv.Close()
	return srv.http.Config()
}

// TestSettingsDefaults checks the defaults the field comments promise, and
// that a server configured from an empty environment is protected: a
// connection cap, a handshake deadline and a per-session rate limit are all
// on.
func TestSettingsDefaults(t *testing.T) {
	s := mustLoad(t, map[string]string{"UNRELATED": "1"})
	if !reflect.DeepEqual(s, Settings{}) {
		t.Fatalf("an environment without WEBSOCKET_* variables gave %+v, want the zero Settings", s)
	}
	c := inEffect(t, Config{Settings: s})

	if c.PingInterval != 30*time.Second {
		t.Errorf("PingInterval = %v, want 30s", c.PingInterval)
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
	if c.MaxConnections != 10000 {
		t.Errorf("MaxConnections = %d, want 10000", c.MaxConnections)
	}
	if c.HandshakeTimeout != 10*time.Second {
		t.Errorf("HandshakeTimeout = %v, want 10s", c.HandshakeTimeout)
	}
	if c.RateLimit != 100 || c.RateBurst != 200 {
		t.Errorf("RateLimit, RateBurst = %v, %d; want 100, 200", c.RateLimit, c.RateBurst)
	}
	if c.OverflowPolicy != "resync" || c.MaxLag != time.Minute {
		t.Errorf("OverflowPolicy, MaxLag = %q, %v; want resync, 1m", c.OverflowPolicy, c.MaxLag)
	}
	if c.Logger == nil {
		t.Error("Logger is nil; the defaults should provide one")
	}
}

func TestSettingsFromLookupDurations(t *testing.T) {
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
	fields := map[string]func(Settings) time.Duration{
		"WEBSOCKET_PING_INTERVAL":     func(s Settings) time.Duration { return s.PingInterval },
		"WEBSOCKET_PONG_TIMEOUT":      func(s Settings) time.Duration { return s.PongTimeout },
		"WEBSOCKET_IDLE_TIMEOUT":      func(s Settings) time.Duration { return s.IdleTimeout },
		"WEBSOCKET_WRITE_TIMEOUT":     func(s Settings) time.Duration { return s.WriteTimeout },
		"WEBSOCKET_HANDSHAKE_TIMEOUT": func(s Settings) time.Duration { return s.HandshakeTimeout },
	}
	for name, field := range fields {
		for _, v := range values {
			s := mustLoad(t, map[string]string{name: v.in})
			if got := field(s); got != v.want {
				t.Errorf("%s=%q gave %v, want %v", name, v.in, got, v.want)
			}
		}
	}
}

func TestSettingsFromLookupZeroTurnsTimersOff(t *testing.T) {
	for _, zero := range []string{"0", "0s", "0.0"} {
		s := mustLoad(t, map[string]string{
			"WEBSOCKET_IDLE_TIMEOUT":  zero,
			"WEBSOCKET_PING_INTERVAL": zero,
		})
		// Settings spell "off" as a negative duration; zero would mean
		// "use the default" and turn the timer back on.
		if s.IdleTimeout >= 0 {
			t.Errorf("WEBSOCKET_IDLE_TIMEOUT=%q gave IdleTimeout %v, want negative (off)", zero, s.IdleTimeout)
		}
		if s.PingInterval >= 0 {
			t.Errorf("WEBSOCKET_PING_INTERVAL=%q gave PingInterval %v, want negative (off)", zero, s.PingInterval)
		}
	}
}

func TestSettingsFromLookupIntegers(t *testing.T) {
	s := mustLoad(t, map[string]string{
		"WEBSOCKET_MAX_MESSAGE_SIZE":    "1048576",
		"WEBSOCKET_SEND_QUEUE_MESSAGES": " 16 ",
		"WEBSOCKET_SEND_QUEUE_BYTES":    "2048",
	})
	if s.MaxMessageSize != 1048576 || s.MaxQueuedMessages != 16 || s.MaxQueuedBytes != 2048 {
		t.Fatalf("got MaxMessageSize=%d MaxQueuedMessages=%d MaxQueuedBytes=%d, want 1048576, 16, 2048",
			s.MaxMessageSize, s.MaxQueuedMessages, s.MaxQueuedBytes)
	}
	// Variables left unset stay zero, their default, beside the ones given.
	if s.PingInterval != 0 || s.IdleTimeout != 0 {
		t.Fatalf("unset durations changed: ping %v idle %v", s.PingInterval, s.IdleTimeout)
	}
}

// WEBSOCKET_AUTO_PING_PONG=false turns pings off, which Settings spell as a
// negative PingInterval; true leaves the interval as it is.
func TestSettingsFromLookupAutoPingPong(t *testing.T) {
	for in, on := range map[string]bool{"true": true, "false": false, "1": true, "0": false, "FALSE": false, " true ": true} {
		s := mustLoad(t, map[string]string{"WEBSOCKET_AUTO_PING_PONG": in})
		if got := s.PingInterval >= 0; got != on {
			t.Errorf("WEBSOCKET_AUTO_PING_PONG=%q gave PingInterval %v, want pings on=%v", in, s.PingInterval, on)
		}
		s = mustLoad(t, map[string]string{"WEBSOCKET_AUTO_PING_PONG": in, "WEBSOCKET_PING_INTERVAL": "5s"})
		if want := map[bool]time.Duration{true: 5 * time.Second, false: -1}[on]; s.PingInterval != want {
			t.Errorf("WEBSOCKET_AUTO_PING_PONG=%q with WEBSOCKET_PING_INTERVAL=5s gave PingInterval %v, want %v", in, s.PingInterval, want)
		}
	}
	if c := inEffect(t, Config{Settings: mustLoad(t, map[string]string{"WEBSOCKET_AUTO_PING_PONG": "false"})}); c.PingInterval >= 0 {
		t.Errorf("a server built with WEBSOCKET_AUTO_PING_PONG=false has PingInterval %v, want negative (off)", c.PingInterval)
	}
}

func TestSettingsFromLookupAllowedOrigins(t *testing.T) {
	s := mustLoad(t, map[string]string{
		"WEBSOCKET_ALLOWED_ORIGINS": " app.example.com, *.example.org ,,localhost:3000 , ",
	})
	want := []string{"app.example.com", "*.example.org", "localhost:3000"}
	if !slices.Equal(s.OriginPatterns, want) {
		t.Fatalf("OriginPatterns = %q, want %q", s.OriginPatterns, want)
	}

	s = mustLoad(t, map[string]string{"WEBSOCKET_ALLOWED_ORIGINS": ""})
	if len(s.OriginPatterns) != 0 {
		t.Fatalf("empty WEBSOCKET_ALLOWED_ORIGINS gave %q, want none", s.OriginPatterns)
	}
}

func TestSettingsFromLookupLimits(t *testing.T) {
	s := mustLoad(t, map[string]string{
		"WEBSOCKET_MAX_CONNECTIONS":   " 500 ",
		"WEBSOCKET_HANDSHAKE_TIMEOUT": "2500ms",
		"WEBSOCKET_RATE_LIMIT":        "12.5",
		"WEBSOCKET_RATE_BURST":        "40",
	})
	if s.MaxConnections != 500 {
		t.Errorf("MaxConnections = %d, want 500", s.MaxConnections)
	}
	if s.HandshakeTimeout != 2500*time.Millisecond {
		t.Errorf("HandshakeTimeout = %v, want 2.5s", s.HandshakeTimeout)
	}
	if s.RateLimit != 12.5 || s.RateBurst != 40 {
		t.Errorf("RateLimit, RateBurst = %v, %d; want 12.5, 40", s.RateLimit, s.RateBurst)
	}
	// Unset limits stay zero, their default, beside the ones given.
	if s.MaxMessageSize != 0 || s.PingInterval != 0 {
		t.Errorf("unset settings changed: MaxMessageSize %d, PingInterval %v", s.MaxMessageSize, s.PingInterval)
	}
	// A rate limit alone keeps the default burst.
	c := inEffect(t, Config{Settings: mustLoad(t, map[string]string{"WEBSOCKET_RATE_LIMIT": "5"})})
	if c.RateLimit != 5 || c.RateBurst != 200 {
		t.Errorf("WEBSOCKET_RATE_LIMIT=5 runs with RateLimit %v, RateBurst %d; want 5, 200", c.RateLimit, c.RateBurst)
	}
}

// TestSettingsFromLookupOverflow checks the overflow policy's variables,
// and that a policy the server does not know is refused, from the
// environment and in Settings.
func TestSettingsFromLookupOverflow(t *testing.T) {
	s := mustLoad(t, map[string]string{"WEBSOCKET_OVERFLOW_POLICY": " close ", "WEBSOCKET_MAX_LAG": "90s"})
	if s.OverflowPolicy != "close" || s.MaxLag != 90*time.Second {
		t.Errorf("OverflowPolicy, MaxLag = %q, %v; want close, 90s", s.OverflowPolicy, s.MaxLag)
	}
	if c := inEffect(t, Config{Settings: s}); c.OverflowPolicy != "close" || c.MaxLag != 90*time.Second {
		t.Errorf("a server built from them runs with %q, %v", c.OverflowPolicy, c.MaxLag)
	}
	for _, v := range []string{"drop", "", "Resync"} {
		if _, err := settingsFromLookup(lookup(map[string]string{"WEBSOCKET_OVERFLOW_POLICY": v})); err == nil || !strings.Contains(err.Error(), "WEBSOCKET_OVERFLOW_POLICY") {
			t.Errorf("WEBSOCKET_OVERFLOW_POLICY=%q: error %v, want one naming the variable", v, err)
		}
	}
	if _, err := New(Config{Settings: Settings{OverflowPolicy: "drop"}}); err == nil || !strings.Contains(err.Error(), "OverflowPolicy") {
		t.Errorf("New with OverflowPolicy drop: error %v, want one naming the field", err)
	}
	if _, err := New(Config{Settings: Settings{MaxLag: -time.Second}}); err == nil || !strings.Contains(err.Error(), "MaxLag") {
		t.Errorf("New with a negative MaxLag: error %v, want one naming the field", err)
	}
}

// TestSettingsFromLookupRateLimitZeroIsNoLimit checks that
// WEBSOCKET_RATE_LIMIT=0 turns the limit off: Settings spell that as a
// negative RateLimit (zero would mean "use the default" and turn it back
// on), and a server built from it keeps it off.
func TestSettingsFromLookupRateLimitZeroIsNoLimit(t *testing.T) {
	for _, zero := range []string{"0", " 0 ", "0.0"} {
		s := mustLoad(t, map[string]string{"WEBSOCKET_RATE_LIMIT": zero})
		if s.RateLimit >= 0 {
			t.Errorf("WEBSOCKET_RATE_LIMIT=%q gave RateLimit %v, want negative (no limit)", zero, s.RateLimit)
		}
	}
	c := inEffect(t, Config{Settings: mustLoad(t, map[string]string{"WEBSOCKET_RATE_LIMIT": "0"})})
	if c.RateLimit >= 0 {
		t.Errorf("a server built with WEBSOCKET_RATE_LIMIT=0 has RateLimit %v, want negative (no limit)", c.RateLimit)
	}
}

func TestSettingsFromLookupRejectsMalformedValues(t *testing.T) {
	durations := []string{
		"WEBSOCKET_PING_INTERVAL", "WEBSOCKET_PONG_TIMEOUT",
		"WEBSOCKET_IDLE_TIMEOUT", "WEBSOCKET_WRITE_TIMEOUT", "WEBSOCKET_MAX_LAG",
	}
	integers := []string{
		"WEBSOCKET_MAX_MESSAGE_SIZE", "WEBSOCKET_SEND_QUEUE_MESSAGES", "WEBSOCKET_SEND_QUEUE_BYTES",
	}
	cases := map[string][]string{
		"WEBSOCKET_AUTO_PING_PONG":    {"maybe", "", "yes"},
		"WEBSOCKET_MAX_CONNECTIONS":   {"abc", "-1", "10x", "", "1.5", "1e3"},
		"WEBSOCKET_HANDSHAKE_TIMEOUT": {"abc", "-1", "-5s", "10x", "", "NaN", "Inf", "1e300"},
		"WEBSOCKET_RATE_LIMIT":        {"abc", "-1", "-0.5", "NaN", "Inf", "-Inf", "", "10/s"},
		"WEBSOCKET_RATE_BURST":        {"abc", "-1", "0", "1.5", "", "10x"},
	}
	for _, name := range durations {
		cases[name] = []string{"abc", "-5", "-5s", "10x", "", "1h30", "s"}
	}
	for _, name := range integers {
		cases[name] = []string{"abc", "-5", "10x", "", "0", "1.5", "1e3"}
	}
	for name, values := range cases {
		for _, v := range values {
			s, err := settingsFromLookup(lookup(map[string]string{
				name: v,
				// A valid variable beside the bad one must not hide the error.
				"WEBSOCKET_ALLOWED_ORIGINS": "example.com",
			}))
			if err == nil {
				t.Errorf("%s=%q: no error (%+v), want one (a typo must not fall back to the default)", name, v, s)
				continue
			}
			if !strings.Contains(err.Error(), name) || !strings.HasPrefix(err.Error(), "troupe: ") {
				t.Errorf("%s=%q: error %q does not start with troupe: and name the variable", name, v, err)
			}
		}
	}
}

// Numbers that parse as floats but fit no time.Duration must not wrap
// around into a huge negative duration, which Settings read as "off".
func TestSettingsFromLookupRejectsUnrepresentableSeconds(t *testing.T) {
	for _, name := range []string{"WEBSOCKET_PING_INTERVAL", "WEBSOCKET_IDLE_TIMEOUT", "WEBSOCKET_PONG_TIMEOUT", "WEBSOCKET_WRITE_TIMEOUT"} {
		for _, v := range []string{"NaN", "Inf", "+Inf", "1e300", "1e400", "9223372036.854776"} {
			s, err := settingsFromLookup(lookup(map[string]string{name: v}))
			if err == nil {
				t.Errorf("%s=%q: no error (PingInterval %v, IdleTimeout %v), want one naming the variable",
					name, v, s.PingInterval, s.IdleTimeout)
				continue
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%q: error %q does not name the variable", name, v, err)
			}
		}
	}
}

func TestSettingsFromEnvReadsProcessEnvironment(t *testing.T) {
	t.Setenv("WEBSOCKET_IDLE_TIMEOUT", "90s")
	t.Setenv("WEBSOCKET_MAX_MESSAGE_SIZE", "4096")
	t.Setenv("WEBSOCKET_AUTO_PING_PONG", "false")
	t.Setenv("WEBSOCKET_MAX_CONNECTIONS", "3")
	t.Setenv("WEBSOCKET_HANDSHAKE_TIMEOUT", "1s")
	t.Setenv("WEBSOCKET_RATE_LIMIT", "50")
	t.Setenv("WEBSOCKET_RATE_BURST", "10")
	s, err := SettingsFromEnv()
	if err != nil {
		t.Fatalf("SettingsFromEnv: %v", err)
	}
	if s.IdleTimeout != 90*time.Second || s.MaxMessageSize != 4096 || s.PingInterval >= 0 {
		t.Errorf("SettingsFromEnv gave idle %v, max size %d, ping interval %v", s.IdleTimeout, s.MaxMessageSize, s.PingInterval)
	}
	if s.MaxConnections != 3 || s.HandshakeTimeout != time.Second || s.RateLimit != 50 || s.RateBurst != 10 {
		t.Errorf("SettingsFromEnv gave MaxConnections %d, HandshakeTimeout %v, RateLimit %v, RateBurst %d; want 3, 1s, 50, 10",
			s.MaxConnections, s.HandshakeTimeout, s.RateLimit, s.RateBurst)
	}

	t.Setenv("WEBSOCKET_PING_INTERVAL", "soon")
	if _, err := SettingsFromEnv(); err == nil || !strings.Contains(err.Error(), "WEBSOCKET_PING_INTERVAL") {
		t.Fatalf("SettingsFromEnv with WEBSOCKET_PING_INTERVAL=soon: %v, want an error naming it", err)
	}
}

// TestConfigValidate checks that Validate, and so New, refuses a negative
// value for every field that cannot be off and accepts one for every field
// that can, and refuses a Backplane without RoomProtocol.
func TestConfigValidate(t *testing.T) {
	refused := map[string]Config{
		"PongTimeout":       {Settings: Settings{PongTimeout: -1}},
		"MaxMessageSize":    {Settings: Settings{MaxMessageSize: -1}},
		"WriteTimeout":      {Settings: Settings{WriteTimeout: -1}},
		"MaxQueuedMessages": {Settings: Settings{MaxQueuedMessages: -1}},
		"MaxQueuedBytes":    {Settings: Settings{MaxQueuedBytes: -1}},
		"HandshakeTimeout":  {Settings: Settings{HandshakeTimeout: -1}},
		"RateBurst":         {Settings: Settings{RateBurst: -1}},
		"HistoryMessages":   {HistoryMessages: -1},
		"HistoryBytes":      {HistoryBytes: -1},
		"MaxMetaBytes":      {MaxMetaBytes: -1},
		"Backplane":         {Backplane: noBackplane{}},
	}
	for field, cfg := range refused {
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), field) || !strings.HasPrefix(err.Error(), "troupe: ") {
			t.Errorf("Validate with a bad %s: %v, want an error naming it", field, err)
		}
		if _, newErr := New(cfg); newErr == nil || newErr.Error() != err.Error() {
			t.Errorf("New with a bad %s: %v, want Validate's error %v", field, newErr, err)
		}
	}
	if err := (Config{Backplane: noBackplane{}}).Validate(); !errors.Is(err, errBackplaneNeedsProtocol) {
		t.Errorf("Validate with a Backplane and no RoomProtocol: %v", err)
	}

	off := Config{
		Settings:           Settings{PingInterval: -1, IdleTimeout: -1, MaxConnections: -1, RateLimit: -1},
		HistoryRetention:   -1,
		MaxRoomsPerSession: -1,
		MaxRoomMembers:     -1,
	}
	if err := off.Validate(); err != nil {
		t.Errorf("Validate with every timer and limit that can be off turned off: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("the zero Config does not validate: %v", err)
	}
}

// noBackplane is a Backplane that is never used: Validate refuses it first.
type noBackplane struct{ Backplane }

// ConfigFromEnv reads the room settings from TROUPE_* variables besides
// the Settings: unset leaves the default, 0 turns a limit off, and a
// malformed value names its variable.
func TestConfigFromLookup(t *testing.T) {
	c, err := configFromLookup(lookup(map[string]string{"WEBSOCKET_RATE_LIMIT": "5"}))
	if err != nil || c.Settings.RateLimit != 5 || c.HistoryBudget != 0 || c.MaxDormantRooms != 0 || c.HistoryRetention != 0 {
		t.Fatalf("configFromLookup = %+v, %v", c, err)
	}
	c, err = configFromLookup(lookup(map[string]string{
		"TROUPE_HISTORY_MESSAGES":      "50",
		"TROUPE_HISTORY_BYTES":         "4096",
		"TROUPE_HISTORY_RETENTION":     "90s",
		"TROUPE_HISTORY_BUDGET":        "67108864",
		"TROUPE_MAX_DORMANT_ROOMS":     "0",
		"TROUPE_MAX_ROOMS_PER_SESSION": "7",
		"TROUPE_MAX_ROOM_MEMBERS":      "0",
		"TROUPE_MAX_META_BYTES":        "256",
		"TROUPE_PRESENCE_LIMIT":        "500",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{HistoryMessages: 50, HistoryBytes: 4096, HistoryRetention: 90 * time.Second,
		HistoryBudget: 64 << 20, MaxDormantRooms: -1, MaxRoomsPerSession: 7, MaxRoomMembers: -1, MaxMetaBytes: 256, PresenceLimit: 500}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("configFromLookup = %+v, want %+v", c, want)
	}
	if c, _ = configFromLookup(lookup(map[string]string{"TROUPE_PRESENCE_LIMIT": "0"})); c.PresenceLimit >= 0 {
		t.Errorf("TROUPE_PRESENCE_LIMIT=0: PresenceLimit = %v, want no limit (negative)", c.PresenceLimit)
	}
	if c, _ = configFromLookup(lookup(map[string]string{"TROUPE_HISTORY_RETENTION": "0"})); c.HistoryRetention >= 0 {
		t.Errorf("TROUPE_HISTORY_RETENTION=0: HistoryRetention = %v, want off (negative)", c.HistoryRetention)
	}
	for name, v := range map[string]string{
		"TROUPE_HISTORY_BUDGET":    "-1",
		"TROUPE_HISTORY_BYTES":     "0",
		"TROUPE_MAX_DORMANT_ROOMS": "many",
		"TROUPE_PRESENCE_LIMIT":    "-5",
		"TROUPE_HISTORY_RETENTION": "soon",
		"WEBSOCKET_RATE_BURST":     "x",
	} {
		_, err := configFromLookup(lookup(map[string]string{name: v}))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: err = %v, want one naming the variable", name, v, err)
		}
	}
}
