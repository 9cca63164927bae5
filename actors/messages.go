package actors

// Messages of the session actor's mailbox.

// outbound carries one accepted frame to the actor.
type outbound struct{ frame Frame }

// kickWriter wakes the writer after a close was requested: the close state
// is already set on the Session; the actor only makes sure someone acts on it.
type kickWriter struct{}

// reportError asks the actor to call OnError, so that whoever noticed the
// error (a room broadcasting, say) never runs user code itself.
type reportError struct{ err error }
