package serve

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

// Config holds the connection-level settings. The zero value of every field
// means "use the default" (the defaults are in the field comments); use a
// negative duration to disable a timer explicitly.
type Config struct {
	// PingInterval is how often the server pings each client (default 30s,
	// negative disables; env WEBSOCKET_PING_INTERVAL, where 0 disables).
	PingInterval time.Duration
	// AutoPingPong turns the server's pings on (default true; env
	// WEBSOCKET_AUTO_PING_PONG). Pongs to client pings are always sent.
	// Because the zero value of a bool is false, the setting is a pointer:
	// nil means the default.
	AutoPingPong *bool
	// PongTimeout is how long a ping may wait for its pong before the
	// connection is dropped (default 15s; env WEBSOCKET_PONG_TIMEOUT).
	PongTimeout time.Duration
	// IdleTimeout closes a session (1008 "idle timeout") whose client sent
	// no message for that long; pongs do not count (default 60s, negative
	// disables; env WEBSOCKET_IDLE_TIMEOUT, where 0 disables).
	IdleTimeout time.Duration
	// MaxMessageSize is the largest message a client may send, in bytes;
	// a larger one closes the session with 1009 (default 65536; env
	// WEBSOCKET_MAX_MESSAGE_SIZE).
	MaxMessageSize int64
	// WriteTimeout bounds each batch of writes to one client (default 10s;
	// env WEBSOCKET_WRITE_TIMEOUT).
	WriteTimeout time.Duration
	// MaxQueuedMessages and MaxQueuedBytes bound each session's outbound
	// queue; overflowing either closes the session with 1013 (defaults 1024
	// and 4 MiB; env WEBSOCKET_SEND_QUEUE_MESSAGES, WEBSOCKET_SEND_QUEUE_BYTES).
	MaxQueuedMessages int
	MaxQueuedBytes    int
	// OriginPatterns lists the host patterns (path.Match syntax, for example
	// "*.example.com") allowed in the Origin header besides the server's own
	// host (env WEBSOCKET_ALLOWED_ORIGINS, comma-separated).
	OriginPatterns []string
	// InsecureSkipOriginCheck accepts any Origin. It exposes the server to
	// cross-site WebSocket hijacking: only use it for servers that do not
	// rely on cookies.
	InsecureSkipOriginCheck bool
	// MaxConnections bounds the open connections; upgrades beyond it are
	// answered 503 (default 10000, negative: no limit; env
	// WEBSOCKET_MAX_CONNECTIONS).
	MaxConnections int
	// HandshakeTimeout bounds the upgrade, the Authorize hook included
	// (its request's context ends then); a hook still running is refused
	// with 401 (default 10s; env WEBSOCKET_HANDSHAKE_TIMEOUT).
	HandshakeTimeout time.Duration
	// RateLimit is how many messages per second one client may send on
	// average, RateBurst how many at once. A message over the limit is
	// answered with an error envelope (code "rate_limited") and not
	// handled; a client whose refused messages outnumber its accepted ones
	// by more than RateBurst is closed with 1008 (defaults 100/s, burst 200;
	// negative RateLimit: no limit; env WEBSOCKET_RATE_LIMIT, where 0 means
	// no limit, and WEBSOCKET_RATE_BURST).
	RateLimit float64
	RateBurst int
	// DisableNDJSON stops the server from offering the "ndjson"
	// subprotocol, under which queued messages are coalesced into one
	// frame of newline-separated envelopes.
	DisableNDJSON bool
	// Logger receives Troupe's own logs (default slog.Default()); the actor
	// library's informational chatter is held back below Warn.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultPingInterval   = 30 * time.Second
	DefaultPongTimeout    = 15 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	DefaultMaxMessageSize = 65536
	DefaultWriteTimeout   = session.DefaultWriteTimeout
	DefaultMaxConnections = 10000
	DefaultHandshake      = 10 * time.Second
	DefaultRateLimit      = 100
	DefaultRateBurst      = 200
)

// WithDefaults returns c with every unset field at its default. It is
// applied by NewHandler; call it to see the values in effect.
func (c Config) WithDefaults() Config {
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.AutoPingPong == nil {
		t := true
		c.AutoPingPong = &t
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxQueuedMessages == 0 {
		c.MaxQueuedMessages = session.DefaultMaxQueuedMessages
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = session.DefaultMaxQueuedBytes
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshake
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.RateBurst == 0 {
		c.RateBurst = DefaultRateBurst
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	switch {
	case c.MaxMessageSize < 0:
		return fmt.Errorf("troupe: MaxMessageSize %d is negative", c.MaxMessageSize)
	case c.MaxQueuedMessages < 0:
		return fmt.Errorf("troupe: MaxQueuedMessages %d is negative", c.MaxQueuedMessages)
	case c.RateBurst < 0:
		return fmt.Errorf("troupe: RateBurst %d is negative", c.RateBurst)
	case c.MaxQueuedBytes < 0:
		return fmt.Errorf("troupe: MaxQueuedBytes %d is negative", c.MaxQueuedBytes)
	}
	return nil
}

func (c Config) pinging() bool { return *c.AutoPingPong && c.PingInterval > 0 }
