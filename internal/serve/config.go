package serve

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

// Config is what the WebSocket server needs: a server's connection settings
// and its logger.
type Config struct {
	Limits
	// Logger receives the transport's logs (default slog.Default()).
	Logger *slog.Logger
}

// Limits are troupe.Settings, field for field (troupe.Settings documents
// them), so that the root converts one into the other. A zero field takes
// its default; a negative PingInterval, IdleTimeout, MaxConnections or
// RateLimit turns that timer or limit off.
type Limits struct {
	PingInterval            time.Duration
	PongTimeout             time.Duration
	IdleTimeout             time.Duration
	MaxMessageSize          int64
	WriteTimeout            time.Duration
	MaxQueuedMessages       int
	MaxQueuedBytes          int
	OriginPatterns          []string
	InsecureSkipOriginCheck bool
	MaxConnections          int
	HandshakeTimeout        time.Duration
	RateLimit               float64
	RateBurst               int
	DisableNDJSON           bool
	StreamResumeWindow      time.Duration
	DisableStreams          bool
	OverflowPolicy          string
	MaxLag                  time.Duration
}

// Defaults of the zero fields.
const (
	defaultPingInterval   = 30 * time.Second
	defaultPongTimeout    = 15 * time.Second
	defaultIdleTimeout    = 60 * time.Second
	defaultMaxMessageSize = 65536
	defaultWriteTimeout   = session.DefaultWriteTimeout
	defaultMaxConnections = 10000
	defaultHandshake      = 10 * time.Second
	defaultRateLimit      = 100
	defaultRateBurst      = 200
	defaultResumeWindow   = 15 * time.Second
)

// withDefaults returns c with every zero field at its default. NewHandler
// applies it.
func (c Config) withDefaults() Config {
	if c.PingInterval == 0 {
		c.PingInterval = defaultPingInterval
	}
	if c.PongTimeout == 0 {
		c.PongTimeout = defaultPongTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = defaultMaxMessageSize
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = defaultWriteTimeout
	}
	if c.MaxQueuedMessages == 0 {
		c.MaxQueuedMessages = session.DefaultMaxQueuedMessages
	}
	if c.MaxQueuedBytes == 0 {
		c.MaxQueuedBytes = session.DefaultMaxQueuedBytes
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = defaultMaxConnections
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = defaultHandshake
	}
	if c.RateLimit == 0 {
		c.RateLimit = defaultRateLimit
	}
	if c.RateBurst == 0 {
		c.RateBurst = defaultRateBurst
	}
	if c.StreamResumeWindow == 0 {
		c.StreamResumeWindow = defaultResumeWindow
	}
	if c.OverflowPolicy == "" {
		c.OverflowPolicy = "resync"
	}
	if c.MaxLag == 0 {
		c.MaxLag = session.DefaultMaxLag
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validate reports settings that cannot work: a negative value for one
// that cannot be off.
func (c Config) validate() error {
	switch {
	case c.PongTimeout < 0:
		return fmt.Errorf("transport: PongTimeout %v is negative", c.PongTimeout)
	case c.MaxMessageSize < 0:
		return fmt.Errorf("transport: MaxMessageSize %d is negative", c.MaxMessageSize)
	case c.WriteTimeout < 0:
		return fmt.Errorf("transport: WriteTimeout %v is negative", c.WriteTimeout)
	case c.MaxQueuedMessages < 0:
		return fmt.Errorf("transport: MaxQueuedMessages %d is negative", c.MaxQueuedMessages)
	case c.MaxQueuedBytes < 0:
		return fmt.Errorf("transport: MaxQueuedBytes %d is negative", c.MaxQueuedBytes)
	case c.HandshakeTimeout < 0:
		return fmt.Errorf("transport: HandshakeTimeout %v is negative", c.HandshakeTimeout)
	case c.StreamResumeWindow < 0:
		return fmt.Errorf("transport: StreamResumeWindow %v is negative", c.StreamResumeWindow)
	case c.RateBurst < 0:
		return fmt.Errorf("transport: RateBurst %d is negative", c.RateBurst)
	case c.MaxLag < 0:
		return fmt.Errorf("transport: MaxLag %v is negative", c.MaxLag)
	case c.OverflowPolicy != "" && c.OverflowPolicy != "resync" && c.OverflowPolicy != "close":
		return fmt.Errorf("transport: OverflowPolicy %q is neither resync nor close", c.OverflowPolicy)
	}
	return nil
}

func (c Config) pinging() bool { return c.PingInterval > 0 }

// resyncs reports whether room traffic that overflows a queue is dropped
// for a room.resync (the default) rather than closing the session.
func (c Config) resyncs() bool { return c.OverflowPolicy != "close" }
