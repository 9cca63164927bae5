package troupe

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/troupehq/troupe/internal/serve"
)

// Settings are the connection-level settings of Config.Settings: heartbeat,
// timeouts, limits and origins. They follow Config's convention: zero means
// the default, negative means off (a timer) or no limit (a limit), and a
// field that cannot be off says so. SettingsFromEnv reads them from the
// WEBSOCKET_* environment variables named below.
type Settings struct {
	// PingInterval is how often the server pings each client. Default 30s;
	// negative: no pings (pongs to the client's pings are always sent).
	// Env WEBSOCKET_PING_INTERVAL (0 there: no pings), and
	// WEBSOCKET_AUTO_PING_PONG=false, which also turns pings off.
	PingInterval time.Duration
	// PongTimeout is how long a ping may wait for its pong before the
	// connection is dropped. Default 15s; it cannot be off. Env
	// WEBSOCKET_PONG_TIMEOUT.
	PongTimeout time.Duration
	// IdleTimeout closes a session (1008 "idle timeout") whose client sent
	// no message for that long; pongs do not count. Default 60s; negative:
	// off. Env WEBSOCKET_IDLE_TIMEOUT (0 there: off).
	IdleTimeout time.Duration
	// MaxMessageSize is the largest message a client may send, in bytes; a
	// larger one closes the session with 1009. Default 65536; it cannot be
	// off. Env WEBSOCKET_MAX_MESSAGE_SIZE.
	MaxMessageSize int64
	// WriteTimeout bounds each batch of writes to one client. Default 10s;
	// it cannot be off. Env WEBSOCKET_WRITE_TIMEOUT.
	WriteTimeout time.Duration
	// MaxQueuedMessages bounds each session's outbound queue in messages;
	// overflowing it closes the session with 1013 (slow consumer). Default
	// 1024; it cannot be off. Env WEBSOCKET_SEND_QUEUE_MESSAGES.
	MaxQueuedMessages int
	// MaxQueuedBytes bounds each session's outbound queue in bytes, as
	// MaxQueuedMessages does in messages. Default 4 MiB; it cannot be off.
	// Env WEBSOCKET_SEND_QUEUE_BYTES.
	MaxQueuedBytes int
	// OriginPatterns lists the host patterns (path.Match syntax, for example
	// "*.example.com") allowed in the Origin header besides the server's own
	// host. Default none. Env WEBSOCKET_ALLOWED_ORIGINS, comma-separated.
	OriginPatterns []string
	// InsecureSkipOriginCheck accepts any Origin. It exposes the server to
	// cross-site WebSocket hijacking: only use it for servers that do not
	// rely on cookies. Default false; no variable.
	InsecureSkipOriginCheck bool
	// MaxConnections bounds the open connections; upgrades beyond it are
	// answered 503. Default 10000; negative: no limit. Env
	// WEBSOCKET_MAX_CONNECTIONS.
	MaxConnections int
	// HandshakeTimeout bounds the upgrade, the Authorize hook included (its
	// request's context ends then); a hook still running is refused with
	// 401. Default 10s; it cannot be off. Env WEBSOCKET_HANDSHAKE_TIMEOUT.
	HandshakeTimeout time.Duration
	// RateLimit is how many messages per second one client may send on
	// average. A message over the limit is answered with an error envelope
	// (code "rate_limited") and not handled. Default 100; negative: no
	// limit. Env WEBSOCKET_RATE_LIMIT (0 there: no limit).
	RateLimit float64
	// RateBurst is how many messages one client may send at once under
	// RateLimit; a client whose refused messages outnumber its accepted ones
	// by more than RateBurst is closed with 1008. Default 200; it cannot be
	// off (turn RateLimit off instead). Env WEBSOCKET_RATE_BURST.
	RateBurst int
	// DisableNDJSON stops the server from offering the "ndjson"
	// subprotocol, under which queued messages are coalesced into one frame
	// of newline-separated envelopes. Default false (offered); no variable.
	DisableNDJSON bool
	// StreamResumeWindow is how long a session of the HTTP fallback
	// (Server-Sent Events down, POST up) waits for its client to reopen a
	// dropped event stream; a client back in time continues where it was,
	// missing nothing. After it the session closes with 1006. Default 15s;
	// it cannot be off (use DisableStreams). No variable.
	StreamResumeWindow time.Duration
	// DisableStreams turns the HTTP fallback off: the Server then answers
	// only WebSocket upgrades, and the fallback's requests get 404.
	// Default false (on); no variable.
	DisableStreams bool
	// OverflowPolicy is what happens to a member whose outbound queue
	// overflows with room-protocol traffic (room.message, presence.diff):
	// "resync" (the default) drops its queued room traffic and sends it
	// one room.resync per room, from which the clients catch up on the
	// room's history without disconnecting; "close" closes it with 1013
	// as any other overflow. Under "resync" room traffic may fill three
	// quarters of MaxQueuedMessages and MaxQueuedBytes, the rest being
	// kept for other frames. Env WEBSOCKET_OVERFLOW_POLICY.
	OverflowPolicy string
	// MaxLag bounds, under the "resync" OverflowPolicy, how long a member
	// may stay behind: one whose queue keeps overflowing, without ever
	// catching up (a write that drains the queue, or finishes with no
	// overflow since the one before), for longer than this is closed with
	// 1013. Default 1m; it
	// cannot be off. Env WEBSOCKET_MAX_LAG.
	MaxLag time.Duration
}

// The values of Settings.OverflowPolicy.
const (
	overflowResync = "resync"
	overflowClose  = "close"
)

// The environment variables SettingsFromEnv reads.
const (
	envPingInterval   = "WEBSOCKET_PING_INTERVAL"
	envAutoPingPong   = "WEBSOCKET_AUTO_PING_PONG"
	envPongTimeout    = "WEBSOCKET_PONG_TIMEOUT"
	envIdleTimeout    = "WEBSOCKET_IDLE_TIMEOUT"
	envMaxMessageSize = "WEBSOCKET_MAX_MESSAGE_SIZE"
	envWriteTimeout   = "WEBSOCKET_WRITE_TIMEOUT"
	envQueueMessages  = "WEBSOCKET_SEND_QUEUE_MESSAGES"
	envQueueBytes     = "WEBSOCKET_SEND_QUEUE_BYTES"
	envAllowedOrigins = "WEBSOCKET_ALLOWED_ORIGINS"
	envMaxConnections = "WEBSOCKET_MAX_CONNECTIONS"
	envHandshake      = "WEBSOCKET_HANDSHAKE_TIMEOUT"
	envRateLimit      = "WEBSOCKET_RATE_LIMIT"
	envRateBurst      = "WEBSOCKET_RATE_BURST"
	envOverflowPolicy = "WEBSOCKET_OVERFLOW_POLICY"
	envMaxLag         = "WEBSOCKET_MAX_LAG"
)

// SettingsFromEnv returns the settings the WEBSOCKET_* variables of the
// process environment set (each Settings field names its variable); the
// fields whose variable is unset are zero, their default. Durations accept
// Go syntax ("30s", "1m30s") and bare seconds ("30", "2.5"); for
// WEBSOCKET_PING_INTERVAL, WEBSOCKET_IDLE_TIMEOUT and WEBSOCKET_RATE_LIMIT,
// 0 means off. A malformed value is an error that names the variable; it
// never falls back to the default in silence.
func SettingsFromEnv() (Settings, error) { return settingsFromLookup(os.LookupEnv) }

// settingsFromLookup is SettingsFromEnv with the environment given as a
// lookup function (os.LookupEnv, or a map in tests).
func settingsFromLookup(lookup func(string) (string, bool)) (Settings, error) {
	var s Settings
	var err error
	dur := func(name string, dst *time.Duration, zeroIsOff bool) {
		v, ok := lookup(name)
		if !ok || err != nil {
			return
		}
		d, e := parseDuration(v)
		if e != nil {
			err = fmt.Errorf("troupe: %s=%q: %v", name, v, e)
			return
		}
		if d == 0 && zeroIsOff {
			d = -1
		}
		*dst = d
	}
	integer := func(name string, dst *int) {
		v, ok := lookup(name)
		if !ok || err != nil {
			return
		}
		n, e := strconv.ParseInt(strings.TrimSpace(v), 10, 0)
		if e != nil || n <= 0 {
			err = fmt.Errorf("troupe: %s=%q: want a positive whole number", name, v)
			return
		}
		*dst = int(n)
	}
	dur(envPingInterval, &s.PingInterval, true)
	dur(envPongTimeout, &s.PongTimeout, false)
	dur(envIdleTimeout, &s.IdleTimeout, true)
	dur(envWriteTimeout, &s.WriteTimeout, false)
	dur(envHandshake, &s.HandshakeTimeout, false)
	dur(envMaxLag, &s.MaxLag, false)
	var maxSize int
	integer(envMaxMessageSize, &maxSize)
	s.MaxMessageSize = int64(maxSize)
	integer(envQueueMessages, &s.MaxQueuedMessages)
	integer(envQueueBytes, &s.MaxQueuedBytes)
	integer(envMaxConnections, &s.MaxConnections)
	integer(envRateBurst, &s.RateBurst)
	if v, ok := lookup(envRateLimit); ok && err == nil {
		f, e := strconv.ParseFloat(strings.TrimSpace(v), 64)
		switch {
		case e != nil || math.IsNaN(f) || math.IsInf(f, 0):
			err = fmt.Errorf("troupe: %s=%q: want a number of messages per second (0 for no limit)", envRateLimit, v)
		case f < 0:
			err = fmt.Errorf("troupe: %s=%q: must not be negative", envRateLimit, v)
		case f == 0:
			s.RateLimit = -1
		default:
			s.RateLimit = f
		}
	}
	if v, ok := lookup(envAutoPingPong); ok && err == nil {
		on, e := strconv.ParseBool(strings.TrimSpace(v))
		switch {
		case e != nil:
			err = fmt.Errorf("troupe: %s=%q: want true or false", envAutoPingPong, v)
		case !on:
			s.PingInterval = -1
		}
	}
	if v, ok := lookup(envOverflowPolicy); ok && err == nil {
		s.OverflowPolicy = strings.TrimSpace(v)
		if s.OverflowPolicy != overflowResync && s.OverflowPolicy != overflowClose {
			err = fmt.Errorf("troupe: %s=%q: want %q or %q", envOverflowPolicy, v, overflowResync, overflowClose)
		}
	}
	if v, ok := lookup(envAllowedOrigins); ok && err == nil {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				s.OriginPatterns = append(s.OriginPatterns, p)
			}
		}
	}
	if err != nil {
		return Settings{}, err
	}
	return s, nil
}

// The environment variables ConfigFromEnv reads besides SettingsFromEnv's:
// Config's room settings, under the prefix TROUPE_ (they are not the
// WebSocket connection's).
const (
	envHistoryMessages    = "TROUPE_HISTORY_MESSAGES"
	envHistoryBytes       = "TROUPE_HISTORY_BYTES"
	envHistoryRetention   = "TROUPE_HISTORY_RETENTION"
	envHistoryBudget      = "TROUPE_HISTORY_BUDGET"
	envMaxDormantRooms    = "TROUPE_MAX_DORMANT_ROOMS"
	envMaxRoomsPerSession = "TROUPE_MAX_ROOMS_PER_SESSION"
	envMaxRoomMembers     = "TROUPE_MAX_ROOM_MEMBERS"
	envMaxMetaBytes       = "TROUPE_MAX_META_BYTES"
	envPresenceLimit      = "TROUPE_PRESENCE_LIMIT"
)

// ConfigFromEnv returns a Config whose Settings are SettingsFromEnv's and
// whose room settings come from the TROUPE_* variables:
//
//	TROUPE_HISTORY_MESSAGES       HistoryMessages
//	TROUPE_HISTORY_BYTES          HistoryBytes
//	TROUPE_HISTORY_RETENTION      HistoryRetention (0: not kept)
//	TROUPE_HISTORY_BUDGET         HistoryBudget, in bytes (0: no limit)
//	TROUPE_MAX_DORMANT_ROOMS      MaxDormantRooms (0: no limit)
//	TROUPE_MAX_ROOMS_PER_SESSION  MaxRoomsPerSession (0: no limit)
//	TROUPE_MAX_ROOM_MEMBERS       MaxRoomMembers (0: no limit)
//	TROUPE_MAX_META_BYTES         MaxMetaBytes
//	TROUPE_PRESENCE_LIMIT         PresenceLimit (0: always listed)
//
// As in SettingsFromEnv, an unset variable leaves its field zero (the
// default), 0 turns a limit or the retention off where the field can be
// off, and a malformed value is an error that names the variable. The
// callbacks and the rest are the caller's to fill in.
func ConfigFromEnv() (Config, error) { return configFromLookup(os.LookupEnv) }

// configFromLookup is ConfigFromEnv with the environment given as a lookup
// function.
func configFromLookup(lookup func(string) (string, bool)) (Config, error) {
	var c Config
	var err error
	c.Settings, err = settingsFromLookup(lookup)
	if err != nil {
		return Config{}, err
	}
	integer := func(name string, dst *int, zeroIsOff bool) {
		v, ok := lookup(name)
		if !ok || err != nil {
			return
		}
		n, e := strconv.ParseInt(strings.TrimSpace(v), 10, 0)
		switch {
		case e != nil || n < 0 || n == 0 && !zeroIsOff:
			want := "a positive whole number"
			if zeroIsOff {
				want = "a whole number (0 for no limit)"
			}
			err = fmt.Errorf("troupe: %s=%q: want %s", name, v, want)
		case n == 0:
			*dst = -1
		default:
			*dst = int(n)
		}
	}
	integer(envHistoryMessages, &c.HistoryMessages, false)
	integer(envHistoryBytes, &c.HistoryBytes, false)
	integer(envHistoryBudget, &c.HistoryBudget, true)
	integer(envMaxDormantRooms, &c.MaxDormantRooms, true)
	integer(envMaxRoomsPerSession, &c.MaxRoomsPerSession, true)
	integer(envMaxRoomMembers, &c.MaxRoomMembers, true)
	integer(envMaxMetaBytes, &c.MaxMetaBytes, false)
	integer(envPresenceLimit, &c.PresenceLimit, true)
	if v, ok := lookup(envHistoryRetention); ok && err == nil {
		d, e := parseDuration(v)
		switch {
		case e != nil:
			err = fmt.Errorf("troupe: %s=%q: %v", envHistoryRetention, v, e)
		case d == 0:
			c.HistoryRetention = -1
		default:
			c.HistoryRetention = d
		}
	}
	if err != nil {
		return Config{}, err
	}
	return c, nil
}

// parseDuration accepts Go duration syntax or a bare number of seconds, and
// refuses negative durations.
func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case math.IsNaN(f) || math.IsInf(f, 0) || f >= math.MaxInt64/float64(time.Second):
			return 0, errors.New("not a usable number of seconds")
		case f < 0:
			return 0, errors.New("negative duration")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New("want a duration like 30s or a number of seconds")
	}
	if d < 0 {
		return 0, errors.New("negative duration")
	}
	return d, nil
}

// validate reports settings that cannot work: a negative value for a field
// that cannot be off.
func (s Settings) validate() error {
	for _, f := range []struct {
		name     string
		negative bool
	}{
		{"PongTimeout", s.PongTimeout < 0},
		{"MaxMessageSize", s.MaxMessageSize < 0},
		{"WriteTimeout", s.WriteTimeout < 0},
		{"MaxQueuedMessages", s.MaxQueuedMessages < 0},
		{"MaxQueuedBytes", s.MaxQueuedBytes < 0},
		{"HandshakeTimeout", s.HandshakeTimeout < 0},
		{"RateBurst", s.RateBurst < 0},
		{"StreamResumeWindow", s.StreamResumeWindow < 0},
		{"MaxLag", s.MaxLag < 0},
	} {
		if f.negative {
			return fmt.Errorf("troupe: Settings.%s is negative; it cannot be off", f.name)
		}
	}
	if math.IsNaN(s.RateLimit) {
		return errors.New("troupe: Settings.RateLimit is NaN")
	}
	return checkOverflowPolicy(s.OverflowPolicy)
}

// checkOverflowPolicy refuses an OverflowPolicy the server does not know.
func checkOverflowPolicy(p string) error {
	switch p {
	case "", overflowResync, overflowClose:
		return nil
	}
	return fmt.Errorf("troupe: Settings.OverflowPolicy %q: want %q or %q", p, overflowResync, overflowClose)
}

// transportConfig is s as the WebSocket transport takes it; the transport
// applies the defaults of the fields left zero.
func (s Settings) transportConfig(logger *slog.Logger) serve.Config {
	return serve.Config{Limits: serve.Limits(s), Logger: logger}
}
