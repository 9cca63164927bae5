package troupe

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Config configures a Server. Every field is optional, and Config and its
// Settings share one convention: the zero value of a field means its
// default (given in the field's comment); a negative value means off for a
// timer and no limit for a limit. A field that cannot be off says so, and
// Validate (which New calls) rejects a negative value for it.
type Config struct {
	// Settings are the connection-level settings (heartbeat, timeouts,
	// limits, origins). SettingsFromEnv reads them from WEBSOCKET_*
	// variables.
	Settings Settings

	// Logger receives Troupe's own logs (default slog.Default()); the actor
	// library's informational chatter is held back below Warn.
	Logger *slog.Logger

	// Authorize runs on the HTTP upgrade request, before any WebSocket is
	// made. Returning an error refuses the connection with 401, or 403 if
	// the error wraps ErrForbidden; the identity returned is recorded on
	// the session (Session.Identity). The client reads only the status's
	// own text ("Unauthorized"), never the error's, unless the error is
	// (or wraps) an *Error, whose Message is what the application chose to
	// tell it.
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

	// MaxRoomRestarts bounds how often a room whose logic panics is
	// restarted: a failure beyond MaxRoomRestarts within RoomRestartWindow
	// stops the room instead; its members get room.left with the reason
	// and OnError an error matching ErrRoomStopped. Default 10 within 10
	// seconds (protoactor's own default); negative: no limit.
	MaxRoomRestarts   int
	RoomRestartWindow time.Duration

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
	// HistoryMessages bounds the messages each room keeps for resume and
	// room.history. Default 1000; it cannot be off.
	HistoryMessages int
	// HistoryBytes bounds the payload bytes each room keeps for resume and
	// room.history. Default 1 MiB; it cannot be off.
	HistoryBytes int
	// HistoryRetention is how long an empty room's sequence and history are
	// kept for members that come back. Default 5 minutes; negative: off
	// (not kept).
	HistoryRetention time.Duration
	// HistoryBudget bounds the bytes the histories of all rooms hold
	// together, live rooms and the empty ones kept for HistoryRetention
	// (dormant rooms), so that no number of clients can make the server
	// keep more. Over it, dormant rooms are forgotten, oldest first, and
	// then the longest live histories lose their oldest messages; a
	// resume that can no longer be served completely is answered
	// recovered: false. Bytes count the payloads and the history's own
	// bookkeeping (32 bytes per message slot). A NewHistory store takes
	// part only if it implements rooms.Trimmer; one that does not counts
	// as holding nothing. Default 256 MiB; negative: no limit.
	HistoryBudget int
	// MaxDormantRooms bounds the dormant rooms kept for HistoryRetention;
	// beyond it the oldest is forgotten (whatever its history). Default
	// 10000; negative: no limit.
	MaxDormantRooms int
	// NewHistory replaces the in-memory history, for example with a
	// durable store; HistoryMessages and HistoryBytes then do not apply,
	// and HistoryBudget only if the store implements rooms.Trimmer.
	NewHistory func(room string) History
	// Backplane lets the room protocol's rooms span several server nodes:
	// members connected to different nodes see one order, one gap-free
	// sequence and one history (see rooms.Backplane and the module
	// github.com/troupehq/troupe/backplane/nats). Nil, the default, keeps
	// every room in this process. It needs RoomProtocol. Close the
	// backplane after Shutdown.
	Backplane Backplane
	// DedupeMessages bounds the message ids each room remembers so that a
	// room.publish sent again with the same "mid" (a client resending what
	// a dropped connection left unanswered) is not published twice: it is
	// answered with the first one's seq. Each costs about 100 bytes plus
	// the mid. Default 1000; it cannot be off (see DedupeWindow).
	DedupeMessages int
	// DedupeWindow is how long a room remembers a message id. A resend
	// after it (or after DedupeMessages newer messages) is published
	// again. Default 5 minutes; negative: off (mids are not remembered).
	DedupeWindow time.Duration
	// MaxMetaBytes bounds the meta a member sends with room.join. Default
	// 1024; it cannot be off.
	MaxMetaBytes int
	// PresenceLimit is the number of members above which a room of the
	// room protocol counts its members instead of listing them, so that
	// the cost of a join does not grow with the room: room.joined then
	// carries the count and the first 100 members (or PresenceLimit,
	// if smaller), and the members get a
	// presence.count at most once per presence window instead of every
	// presence.diff. The room lists them again (a presence.list, then
	// diffs) once it has fallen to half the limit. Members of every node
	// count. Default 1000; negative: always listed. See the README's
	// "Presence".
	PresenceLimit int

	// MaxRoomsPerSession bounds the rooms one session can be in; a join
	// beyond it fails with code "too_many_rooms". Default 100; negative: no
	// limit.
	MaxRoomsPerSession int
	// MaxRoomMembers bounds the members of one room; a join beyond it fails
	// with code "room_full". Default 10000; negative: no limit.
	MaxRoomMembers int
}

// Room limit defaults.
const (
	defaultMaxRoomsPerSession = 100
	defaultMaxRoomMembers     = 10000
	defaultMaxRoomRestarts    = 10
	defaultRoomRestartWindow  = 10 * time.Second
	// HistoryBudget and MaxDormantRooms go to the rooms' manager as they
	// are: it has the same convention, and these defaults (256 MiB, 10000).
)

// Validate reports a configuration that cannot work: a negative value for
// a field that cannot be off, or a Backplane without RoomProtocol. New
// calls it.
func (c Config) Validate() error {
	if err := c.Settings.validate(); err != nil {
		return err
	}
	for _, f := range []struct {
		name  string
		value int
	}{
		{"HistoryMessages", c.HistoryMessages},
		{"HistoryBytes", c.HistoryBytes},
		{"MaxMetaBytes", c.MaxMetaBytes},
		{"DedupeMessages", c.DedupeMessages},
	} {
		if f.value < 0 {
			return fmt.Errorf("troupe: Config.%s is negative; it cannot be off", f.name)
		}
	}
	if c.Backplane != nil && !c.RoomProtocol {
		return errBackplaneNeedsProtocol
	}
	return nil
}

// ErrForbidden, wrapped in an error returned by Config.Authorize, refuses
// the upgrade with 403 instead of 401.
var ErrForbidden = errors.New("troupe: forbidden")

var errNoSession = errors.New("troupe: no such session")

var errBackplaneNeedsProtocol = errors.New("troupe: Config.Backplane needs RoomProtocol")
