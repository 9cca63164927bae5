package session

// Messages of the session actor's mailbox.

// Shared is a frame made ready to be queued on many sessions: a broadcast
// makes one and hands the same pointer to every member's mailbox, so a
// message to N members costs one allocation, not N.
type Shared struct{ frame Frame }

// Share prepares f for SendShared. f.Data must not be modified afterwards.
func Share(f Frame) *Shared { return &Shared{frame: f} }

// kickWriter wakes the writer after a close was requested: the close state
// is already set on the Session; the actor only makes sure someone acts on it.
type kickWriter struct{}

// reportError asks the actor to call OnError, so that whoever noticed the
// error (a room broadcasting, say) never runs user code itself.
type reportError struct{ err error }
