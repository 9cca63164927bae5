//go:build unix && !linux

package transport

// peekRaw is not used where canPeek is false.
func (l *lendingReader) peekRaw(uintptr) bool { return true }

// canPeek: elsewhere the read loop waits inside coder/websocket's Read.
const canPeek = false
