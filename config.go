package troupe

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/troupehq/troupe/internal/serve"
)

// Config configures a Server. Every field is optional.
type Config struct {
	// Settings are the connection-level settings; unset fields take their
	// defaults. SettingsFromEnv reads them from WEBSOCKET_* variables.
	Settings Settings

	// Authorize runs on the HTTP upgrade request, before any WebSocket is
	// made. Returning an error refuses the connection with 401, or 403 if
	// the error wraps ErrForbidden; the identity returned is recorded on
	// the session (Session.Identity).
	Authorize func(r *http.Request) (identity string, err error)

	// OnOpen runs once a connection is upgraded, before its first message
	// is read. A panic in it closes the session with 1011.
	OnOpen func(s *Session)
	// OnMessage receives text messages that are not envelopes (or every
	// text message, with RawMessages). Without it, such messages are
	// answered with an error envelope (code "bad_request").
	OnMessage func(s *Session, text []byte)
	// OnBinary receives binary messages. Without it, they are answered with
	// an error envelope (code "unsupported").
	OnBinary func(s *Session, data []byte)
	// OnClose runs exactly once for every session that opened, after its
	// connection is gone, with the close code and reason: the ones this side
	// sent if it closed first, else the peer's (1006 if the connection
	// dropped without a close frame).
	OnClose func(s *Session, code int, reason string)
	// OnError receives errors: a handler panic, a slow consumer, a failed
	// write, whatever Session.EmitError is given, and (with s nil) a room
	// whose logic panicked. It may be called from several goroutines.
	OnError func(s *Session, err error)

	// RawMessages sends every text message to OnMessage, skipping the typed
	// envelope layer.
	RawMessages bool

	// NewRoomHandler returns the logic for a room, called when the room
	// starts and on every restart after a panic. Nil: rooms have no logic.
	NewRoomHandler func(room string) RoomHandler

	// AuthorizeJoin is consulted on every join (Server.Join, Context.Join
	// and the room protocol's room.join). An error refuses the join and
	// changes nothing; the client gets an error envelope with code
	// "forbidden" (or the code of a *troupe.Error).
	AuthorizeJoin func(s *Session, room string) error

	// CheckPublish, if set, sees every room.publish of the room protocol
	// before the room does; an error refuses it (the client gets an error
	// envelope: the code of a *troupe.Error, else "forbidden") and nothing
	// is published. Use it to validate bodies or to make rooms read-only.
	CheckPublish func(s *Session, room string, body json.RawMessage) error

	// RoomProtocol switches on the built-in room protocol: room.join (with
	// resume from a sequence number), room.publish, room.leave,
	// room.history and presence.diff. See the README for the wire format.
	RoomProtocol bool
	// HistoryMessages and HistoryBytes bound what each room keeps for
	// resume and room.history (defaults 1000 messages, 1 MiB).
	HistoryMessages int
	HistoryBytes    int
	// HistoryRetention is how long an empty room's sequence and history
	// are kept for members that come back (default 5 minutes; negative:
	// not kept).
	HistoryRetention time.Duration
	// NewHistory replaces the in-memory history, for example with a
	// durable store.
	NewHistory func(room string) History
	// Backplane lets the room protocol's rooms span several server nodes:
	// members connected to different nodes see one order, one gap-free
	// sequence and one history (see rooms.Backplane and the module
	// github.com/troupehq/troupe/backplane/nats). Nil, the default, keeps
	// every room in this process. It needs RoomProtocol. Close the
	// backplane after Shutdown.
	Backplane Backplane
	// MaxMetaBytes bounds the meta a member sends with room.join (default
	// 1024).
	MaxMetaBytes int

	// MaxRoomsPerSession bounds the rooms one session can be in; a join
	// beyond it fails with code "too_many_rooms" (default 100, negative: no
	// limit).
	MaxRoomsPerSession int
	// MaxRoomMembers bounds the members of one room; a join beyond it fails
	// with code "room_full" (default 10000, negative: no limit).
	MaxRoomMembers int
}

// Room limit defaults.
const (
	DefaultMaxRoomsPerSession = 100
	DefaultMaxRoomMembers     = 10000
)

// ErrForbidden, wrapped in an error returned by Config.Authorize, refuses
// the upgrade with 403 instead of 401.
var ErrForbidden = errors.New("troupe: forbidden")

var errNoSession = errors.New("troupe: no such session")

var errBackplaneNeedsProtocol = errors.New("troupe: Config.Backplane needs RoomProtocol")

// SettingsFromEnv returns the default settings overridden by the process
// environment: WEBSOCKET_PING_INTERVAL, WEBSOCKET_AUTO_PING_PONG,
// WEBSOCKET_PONG_TIMEOUT, WEBSOCKET_IDLE_TIMEOUT, WEBSOCKET_MAX_MESSAGE_SIZE,
// WEBSOCKET_WRITE_TIMEOUT, WEBSOCKET_SEND_QUEUE_MESSAGES,
// WEBSOCKET_SEND_QUEUE_BYTES, WEBSOCKET_ALLOWED_ORIGINS,
// WEBSOCKET_MAX_CONNECTIONS, WEBSOCKET_HANDSHAKE_TIMEOUT,
// WEBSOCKET_RATE_LIMIT and WEBSOCKET_RATE_BURST. A malformed value
// is an error that names the variable.
func SettingsFromEnv() (Settings, error) { return serve.FromEnv() }

// Settings are the connection-level settings (heartbeat, timeouts, limits,
// origins) of Config.Settings.
type Settings = serve.Config
