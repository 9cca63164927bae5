// Package transport is what a transport implements to carry Troupe's
// sessions: Conn, one client connection that reads and writes whole
// messages and closes with a code. Troupe's own WebSocket transport
// implements it (troupe.Server is its http.Handler), and so does the
// in-memory connection of package troupetest; a new transport hands each
// connection it accepts to troupe.Server.ServeConn, and sessions, rooms,
// typed handlers, limits and metrics work over it unchanged.
package transport
