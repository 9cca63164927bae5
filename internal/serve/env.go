package serve

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Environment variables read by FromEnv.
const (
	EnvPingInterval   = "WEBSOCKET_PING_INTERVAL"
	EnvAutoPingPong   = "WEBSOCKET_AUTO_PING_PONG"
	EnvPongTimeout    = "WEBSOCKET_PONG_TIMEOUT"
	EnvIdleTimeout    = "WEBSOCKET_IDLE_TIMEOUT"
	EnvMaxMessageSize = "WEBSOCKET_MAX_MESSAGE_SIZE"
	EnvWriteTimeout   = "WEBSOCKET_WRITE_TIMEOUT"
	EnvQueueMessages  = "WEBSOCKET_SEND_QUEUE_MESSAGES"
	EnvQueueBytes     = "WEBSOCKET_SEND_QUEUE_BYTES"
	EnvAllowedOrigins = "WEBSOCKET_ALLOWED_ORIGINS"
	EnvMaxConnections = "WEBSOCKET_MAX_CONNECTIONS"
	EnvHandshake      = "WEBSOCKET_HANDSHAKE_TIMEOUT"
	EnvRateLimit      = "WEBSOCKET_RATE_LIMIT"
	EnvRateBurst      = "WEBSOCKET_RATE_BURST"
)

// FromEnv returns the defaults overridden by the WEBSOCKET_* variables of
// the process environment.
func FromEnv() (Config, error) { return FromLookup(os.LookupEnv) }

// FromLookup is FromEnv with the environment given as a lookup function
// (os.LookupEnv, or a map in tests). Durations accept Go syntax ("30s",
// "1m30s") and bare seconds ("30"). A malformed value is an error naming the
// variable; it never falls back to the default in silence.
func FromLookup(lookup func(string) (string, bool)) (Config, error) {
	var c Config
	var err error
	dur := func(name string, dst *time.Duration, zeroDisables bool) {
		v, ok := lookup(name)
		if !ok || err != nil {
			return
		}
		d, e := parseDuration(v)
		if e != nil {
			err = fmt.Errorf("troupe: %s=%q: %v", name, v, e)
			return
		}
		if d == 0 && zeroDisables {
			d = -1
		}
		*dst = d
	}
	integer := func(name string, dst *int64) {
		v, ok := lookup(name)
		if !ok || err != nil {
			return
		}
		n, e := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if e != nil || n <= 0 {
			err = fmt.Errorf("troupe: %s=%q: want a positive whole number", name, v)
			return
		}
		*dst = n
	}
	dur(EnvPingInterval, &c.PingInterval, true)
	dur(EnvPongTimeout, &c.PongTimeout, false)
	dur(EnvIdleTimeout, &c.IdleTimeout, true)
	dur(EnvWriteTimeout, &c.WriteTimeout, false)
	dur(EnvHandshake, &c.HandshakeTimeout, false)
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{EnvPongTimeout, c.PongTimeout}, {EnvWriteTimeout, c.WriteTimeout}, {EnvHandshake, c.HandshakeTimeout}} {
		if err == nil && d.v < 0 {
			err = fmt.Errorf("troupe: %s must not be negative", d.name)
		}
	}
	integer(EnvMaxMessageSize, &c.MaxMessageSize)
	var qm, qb, mc, rb int64
	integer(EnvQueueMessages, &qm)
	integer(EnvQueueBytes, &qb)
	integer(EnvMaxConnections, &mc)
	integer(EnvRateBurst, &rb)
	c.MaxQueuedMessages, c.MaxQueuedBytes = int(qm), int(qb)
	c.MaxConnections, c.RateBurst = int(mc), int(rb)
	if v, ok := lookup(EnvRateLimit); ok && err == nil {
		f, e := strconv.ParseFloat(strings.TrimSpace(v), 64)
		switch {
		case e != nil || math.IsNaN(f) || math.IsInf(f, 0):
			err = fmt.Errorf("troupe: %s=%q: want a number of messages per second (0 for no limit)", EnvRateLimit, v)
		case f < 0:
			err = fmt.Errorf("troupe: %s=%q: must not be negative", EnvRateLimit, v)
		case f == 0:
			c.RateLimit = -1
		default:
			c.RateLimit = f
		}
	}
	if v, ok := lookup(EnvAutoPingPong); ok && err == nil {
		b, e := strconv.ParseBool(strings.TrimSpace(v))
		if e != nil {
			err = fmt.Errorf("troupe: %s=%q: want true or false", EnvAutoPingPong, v)
		} else {
			c.AutoPingPong = &b
		}
	}
	if v, ok := lookup(EnvAllowedOrigins); ok && err == nil {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.OriginPatterns = append(c.OriginPatterns, p)
			}
		}
	}
	if err != nil {
		return Config{}, err
	}
	return c.WithDefaults(), nil
}

// parseDuration accepts Go duration syntax or a bare number of seconds.
func parseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if f, err := strconv.ParseFloat(v, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case math.IsNaN(f) || math.IsInf(f, 0) || f >= math.MaxInt64/float64(time.Second):
			return 0, fmt.Errorf("not a usable number of seconds")
		case f < 0:
			return 0, fmt.Errorf("negative duration")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("want a duration like 30s or a number of seconds")
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration")
	}
	return d, nil
}
