package troupe

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/internal/router"
	"github.com/troupehq/troupe/internal/serve"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/internal/wire"
	"github.com/troupehq/troupe/transport"
	"github.com/troupehq/troupe/typed"
)

// Server accepts WebSocket connections, and the HTTP fallback's requests
// (Server-Sent Events down, POST up) for clients whose WebSocket upgrade a
// proxy refuses, and runs their sessions and rooms. It is an http.Handler:
// mount it wherever the WebSocket endpoint should be, for GET, POST and
// DELETE. An http.Server waits in its Shutdown for the fallback's event
// streams: shut the Server down first, or from http.Server.RegisterOnShutdown.
type Server struct {
	cfg     Config
	sys     *session.System
	http    *serve.Handler
	rooms   *hub.Manager
	router  *router.Router[*Context]
	metrics *metrics

	stopOnce sync.Once
}

// New returns a server ready to be mounted. It fails only on a
// configuration that cannot work (see Config.Validate).
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	srv := &Server{cfg: cfg, router: router.NewRouter[*Context]()}
	srv.metrics = newMetrics(srv)
	srv.sys = session.NewSystem(cfg.Logger)
	h, err := serve.NewHandler(srv.sys, cfg.Settings.transportConfig(cfg.Logger), serve.Hooks{
		Authorize: srv.authorize(),
		OnOpen:    cfg.OnOpen,
		OnFrame:   srv.onFrame,
		OnError:   srv.onError,
		OnClose:   cfg.OnClose,
		OnRateLimited: func(*Session) {
			srv.metrics.errors.WithLabelValues("rate_limited").Inc()
		},
		Encode: typed.Encode,
		EncodeRequest: func(typ string, payload any, id string) ([]byte, error) {
			return typed.EncodeWithID(typ, payload, wire.AppendString(nil, id))
		},
	})
	if err != nil {
		srv.sys.Shutdown()
		return nil, err
	}
	srv.http = h
	// A keepalive browsers can send (they cannot send WebSocket pings, and
	// pongs do not reset the idle timeout); an application's own "ping"
	// handler replaces it.
	srv.router.HandleEnvelope("ping", func(c *Context, env *typed.Envelope) error {
		return c.Reply("pong", env.Payload)
	})
	srv.rooms = hub.New(srv.sys, hub.Config{
		NewHandler:         cfg.NewRoomHandler,
		Encode:             typed.Encode,
		OnError:            func(_ string, err error) { srv.onError(nil, err) },
		Protocol:           cfg.RoomProtocol,
		HistoryMessages:    cfg.HistoryMessages,
		HistoryBytes:       cfg.HistoryBytes,
		NewHistory:         cfg.NewHistory,
		Retention:          cfg.HistoryRetention,
		HistoryBudget:      cfg.HistoryBudget,
		MaxDormant:         cfg.MaxDormantRooms,
		Backplane:          cfg.Backplane,
		DedupeMessages:     cfg.DedupeMessages,
		DedupeWindow:       cfg.DedupeWindow,
		PresenceLimit:      cfg.PresenceLimit,
		MaxMembers:         limit(cfg.MaxRoomMembers, defaultMaxRoomMembers),
		MaxRoomsPerSession: limit(cfg.MaxRoomsPerSession, defaultMaxRoomsPerSession),
		MaxRestarts:        limit(cfg.MaxRoomRestarts, defaultMaxRoomRestarts),
		RestartWindow:      cmp.Or(cfg.RoomRestartWindow, defaultRoomRestartWindow),
	})
	if cfg.RoomProtocol {
		srv.registerRoomProtocol()
	}
	return srv, nil
}

// limit turns a configured limit into the rooms package's form: 0 takes
// the default, negative means none (0 there).
func limit(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// ServeHTTP upgrades the request to a WebSocket and serves it until it
// closes, or answers a request of the HTTP fallback (a query with "sse";
// see the README's "HTTP fallback").
func (srv *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { srv.http.ServeHTTP(w, r) }

func (srv *Server) authorize() func(*http.Request) (string, int, error) {
	if srv.cfg.Authorize == nil {
		return nil
	}
	return func(r *http.Request) (string, int, error) {
		id, err := srv.cfg.Authorize(r)
		if err == nil {
			return id, 0, nil
		}
		if errors.Is(err, ErrForbidden) {
			return "", http.StatusForbidden, err
		}
		return "", http.StatusUnauthorized, err
	}
}

func (srv *Server) onError(s *Session, err error) {
	if srv.cfg.OnError != nil {
		srv.cfg.OnError(s, err)
		return
	}
	id := ""
	if s != nil {
		id = s.ID()
	}
	srv.sys.Logger().Warn("troupe: error", "session", id, "err", err)
}

// onFrame routes one client message: binary to OnBinary, envelopes to their
// typed handler, other text to OnMessage. The transport runs it one message
// at a time per session, in order, off the read loop.
func (srv *Server) onFrame(s *Session, binary bool, data []byte) {
	if binary {
		if srv.cfg.OnBinary != nil {
			srv.cfg.OnBinary(s, data)
			return
		}
		srv.metrics.errors.WithLabelValues("unsupported").Inc()
		_ = session.SendFrame(s, session.Frame{Data: router.ErrorEnvelope(
			typed.NewError("unsupported", "binary messages are not accepted"), nil)})

		return
	}
	if srv.cfg.RawMessages {
		if srv.cfg.OnMessage != nil {
			srv.cfg.OnMessage(s, data)
		}
		return
	}
	env, err := typed.Decode(data)
	if err != nil {
		if srv.cfg.OnMessage != nil {
			srv.cfg.OnMessage(s, data)
			return
		}
		srv.metrics.errors.WithLabelValues(typed.CodeBadRequest).Inc()
		_ = session.SendFrame(s, session.Frame{Data: router.ErrorEnvelope(
			typed.NewError(typed.CodeBadRequest, err.Error()), nil)})

		return
	}
	if srv.resolve(s, env) {
		return
	}
	c := &Context{srv: srv, s: s, env: env}
	start := time.Now()
	if err := srv.router.Dispatch(c, env); err != nil {
		var pe *typed.PanicError
		if errors.As(err, &pe) {
			srv.onError(s, err)
		}
		ce := router.ClientError(err)
		srv.metrics.observe(env.Type, ce.Code != typed.CodeUnknownType, start, ce.Code)
		_ = session.SendFrame(s, session.Frame{Data: router.ErrorEnvelope(ce, env.ID)})
		return
	}
	srv.metrics.observe(env.Type, true, start, "")
	if len(env.ID) > 0 && string(env.ID) != "null" && !c.replied {
		// Every request with an id gets exactly one answer.
		_ = s.SendText(wire.Envelope(nil, "reply", env.ID, nil))
	}
}

// resolve hands a client's answer to a Session.Request waiting for it.
func (srv *Server) resolve(s *Session, env *typed.Envelope) bool {
	if (env.Type != "reply" && env.Type != "error") || len(env.ID) < len(session.RequestIDPrefix)+2 || env.ID[0] != '"' {
		return false
	}
	var id string
	if json.Unmarshal(env.ID, &id) != nil || !strings.HasPrefix(id, session.RequestIDPrefix) {
		return false
	}
	var err error
	payload := env.Payload
	if env.Type == "error" {
		var e typed.Error
		_ = json.Unmarshal(env.Payload, &e)
		err, payload = &session.ReplyError{Code: e.Code, Message: e.Message}, nil
	}
	return session.Resolve(s, id, payload, err)
}

// Shutdown stops the server gracefully: no new connections (503), close 1001
// to every session after its queued messages, then rooms stop. Sessions
// still open when ctx ends are dropped and ctx's error is returned at once;
// rooms then stop once the last of them has ended. It is idempotent and may
// be called from any goroutine; from a handler, call it on a goroutine of
// its own (or with a ctx that has a deadline): it waits for the handler's
// own session, which ends only once the handler has returned.
func (srv *Server) Shutdown(ctx context.Context) error {
	err := srv.http.Shutdown(ctx)
	srv.stopAfterSessions(ctx)
	return err
}

// Close stops the server at once: every connection is dropped without a
// close handshake (OnClose reports 1006) and rooms stop. Idempotent; safe from any
// goroutine, handlers included: it does not wait for sessions whose
// handler is running (they end when it returns), and rooms stop once the
// last of them has ended.
func (srv *Server) Close() error {
	srv.http.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.stopAfterSessions(ctx)
	return nil
}

// stopAfterSessions stops rooms and the actor system once no session is
// left: now, or when the last one ends if some are still ending (their
// handler was running when Close or Shutdown returned).
func (srv *Server) stopAfterSessions(ctx context.Context) {
	if srv.http.Ended() {
		srv.stop(ctx)
		return
	}
	go func() {
		_ = srv.http.Wait(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.stop(ctx)
	}()
}

func (srv *Server) stop(ctx context.Context) {
	srv.stopOnce.Do(func() {
		if err := srv.rooms.Shutdown(ctx); err != nil {
			srv.sys.Logger().Warn("troupe: rooms did not stop in time", "err", err)
		}
		srv.sys.Shutdown()
	})
}

// ServeConn serves c, a connection another transport accepted, as a
// session of this server, the way ServeHTTP serves a WebSocket: the same
// handlers, rooms, limits, callbacks, metrics and shutdown. It is how a
// transport plugs in (see package transport; troupetest's in-memory
// connection uses it). It reads c on the calling goroutine and returns once
// the session has ended and OnClose has returned. It returns an error at
// once, serving nothing, when the server is shutting down or
// MaxConnections are open. Authorize does not run: the transport
// authenticates, and passes the identity in info. ctx ending closes the
// session with 1001.
func (srv *Server) ServeConn(ctx context.Context, c transport.Conn, info transport.Info) error {
	return srv.http.ServeConn(ctx, c, info)
}

// Session returns the open session with the given ID, or nil.
func (srv *Server) Session(id string) *Session { return srv.http.Session(id) }

// Sessions returns a snapshot of the open sessions.
func (srv *Server) Sessions() []*Session { return srv.http.Sessions() }

// SendTo sends a typed envelope to one session by ID.
func (srv *Server) SendTo(id string, typ string, payload any) error {
	s := srv.Session(id)
	if s == nil {
		return fmt.Errorf("%w: %s", ErrNoSession, id)
	}
	return s.Send(typ, payload)
}

// BroadcastAll encodes the envelope once and queues it on every open session.
func (srv *Server) BroadcastAll(typ string, payload any) error {
	b, err := typed.Encode(typ, payload)
	if err != nil {
		return err
	}
	sh := session.Share(session.Frame{Data: b})
	for _, s := range srv.Sessions() {
		_ = session.SendShared(s, sh)
	}
	return nil
}
