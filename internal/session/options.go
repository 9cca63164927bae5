package session

import (
	"sync/atomic"
	"time"
)

// Options are a session's limits and hooks. The transport fills them from the
// server's configuration; zero values get the defaults below.
type Options struct {
	// MaxQueuedMessages bounds the frames accepted and not yet written
	// (default 1024).
	MaxQueuedMessages int
	// MaxQueuedBytes bounds the bytes of those frames (default 4 MiB).
	MaxQueuedBytes int
	// WriteTimeout bounds one batch of writes (the deadline given to
	// Conn.Write); a write that takes longer drops the connection
	// (default 10s).
	WriteTimeout time.Duration
	// Encode builds a typed envelope for Session.Send.
	Encode func(typ string, payload any) ([]byte, error)
	// EncodeRequest builds the envelope of Session.Request, with its id.
	EncodeRequest func(typ string, payload any, id string) ([]byte, error)
	// OnError receives errors about the session (slow consumer, write
	// failures, and whatever EmitError is given).
	OnError func(s *Session, err error)
	// OnClose is called exactly once, after the connection is gone.
	OnClose func(s *Session, code int, reason string)
	// Unsent, if set, counts the frames accepted for the session (the
	// send returned nil) that were never written: dropped by a
	// discarding close (Drop, a slow consumer, the connection's end),
	// lost with a write that failed, or still queued when the session
	// finished.
	Unsent *atomic.Uint64
	// Resync makes an overflow by room-protocol traffic (frames made by
	// ShareRoom) drop the queued room traffic and queue a room.resync per
	// room instead of closing the session; other frames still close it.
	// Room traffic is then admitted into three quarters of the queue's
	// limits, so that the rest is kept for replies and the application's
	// frames (the history pages a resynced client asks for).
	Resync bool
	// MaxLag bounds, under Resync, how long a session may keep
	// overflowing: one that has not caught up (a write that drained the
	// queue, or finished with no room frame refused since the write
	// before) since its first resync for longer than this is closed with
	// CloseTryAgainLater (default 1 minute).
	MaxLag time.Duration

	// roomMessages and roomBytes are the limits room traffic is admitted
	// under (withDefaults).
	roomMessages uint64
	roomBytes    int64
}

// Default limits.
const (
	DefaultMaxQueuedMessages = 1024
	DefaultMaxQueuedBytes    = 4 << 20
	DefaultWriteTimeout      = 10 * time.Second
	DefaultMaxLag            = time.Minute
)

func (o Options) withDefaults() *Options {
	if o.MaxQueuedMessages <= 0 {
		o.MaxQueuedMessages = DefaultMaxQueuedMessages
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.MaxLag <= 0 {
		o.MaxLag = DefaultMaxLag
	}
	o.roomMessages, o.roomBytes = uint64(o.MaxQueuedMessages), int64(o.MaxQueuedBytes)
	if o.Resync {
		o.roomMessages -= o.roomMessages / 4
		o.roomBytes -= o.roomBytes / 4
	}
	return &o
}
