package troupe

import (
	"encoding/json"
	"fmt"

	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/typed"
)

// The built-in room protocol's handlers (Config.RoomProtocol). The room
// actors do the work (sequence numbers, history, presence) and answer
// room.joined, room.published and room.history themselves, so that those
// answers take their place in the room's order.

type joinMsg struct {
	Room  string          `json:"room"`
	Since *uint64         `json:"since"`
	Epoch string          `json:"epoch"`
	Meta  json.RawMessage `json:"meta"`
}

type roomMsg struct {
	Room string `json:"room"`
}

type publishMsg struct {
	Room string          `json:"room"`
	Body json.RawMessage `json:"body"`
	Mid  string          `json:"mid"`
}

type historyMsg struct {
	Room   string `json:"room"`
	Before uint64 `json:"before"`
	Limit  int    `json:"limit"`
}

// Bounds of the room protocol's requests.
const (
	maxRoomName         = 200
	defaultMaxMetaBytes = 1024
	defaultHistoryLimit = 50
	maxHistoryLimit     = 1000
)

func checkRoom(room string) error {
	if room == "" || len(room) > maxRoomName {
		return typed.NewError(typed.CodeInvalidPayload, fmt.Sprintf("room must be 1 to %d bytes", maxRoomName))
	}
	return nil
}

func (srv *Server) registerRoomProtocol() {
	maxMeta := srv.cfg.MaxMetaBytes
	if maxMeta <= 0 {
		maxMeta = defaultMaxMetaBytes
	}
	Handle(srv, "room.join", func(c *Context, m joinMsg) error {
		if err := checkRoom(m.Room); err != nil {
			return err
		}
		if len(m.Meta) > maxMeta {
			return typed.NewError(typed.CodeInvalidPayload, fmt.Sprintf("meta is over %d bytes", maxMeta))
		}
		if string(m.Meta) == "null" {
			m.Meta = nil
		}
		if err := srv.authorizeJoin(c.s, m.Room); err != nil {
			return err
		}
		c.replied = true // room.joined comes from the room
		return roomError(srv.rooms.JoinWith(c.Context(), m.Room, c.s, &hub.JoinOptions{Since: m.Since, Epoch: m.Epoch, Meta: m.Meta, ID: c.env.ID}))
	})
	Handle(srv, "room.leave", func(c *Context, m roomMsg) error {
		if err := checkRoom(m.Room); err != nil {
			return err
		}
		if err := srv.Leave(c.Context(), m.Room, c.s); err != nil {
			return err
		}
		return c.Reply("room.left", m)
	})
	Handle(srv, "room.publish", func(c *Context, m publishMsg) error {
		if err := checkRoom(m.Room); err != nil {
			return err
		}
		if len(m.Body) == 0 {
			return typed.NewError(typed.CodeInvalidPayload, "body is required")
		}
		if len(m.Mid) > hub.MaxMessageID {
			return typed.NewError(typed.CodeInvalidPayload, fmt.Sprintf("mid must be at most %d bytes", hub.MaxMessageID))
		}
		if srv.cfg.CheckPublish != nil {
			if err := srv.cfg.CheckPublish(c.s, m.Room, m.Body); err != nil {
				return asForbidden(err)
			}
		}
		if err := roomError(srv.rooms.PublishOnce(m.Room, c.s, m.Body, c.env.ID, m.Mid)); err != nil {
			return err
		}
		c.replied = true // room.published (or not_member) comes from the room
		return nil
	})
	Handle(srv, "room.history", func(c *Context, m historyMsg) error {
		if err := checkRoom(m.Room); err != nil {
			return err
		}
		if m.Limit <= 0 {
			m.Limit = defaultHistoryLimit
		}
		m.Limit = min(m.Limit, maxHistoryLimit)
		if err := roomError(srv.rooms.History(m.Room, c.s, m.Before, m.Limit, c.env.ID)); err != nil {
			return err
		}
		c.replied = true
		return nil
	})
}
