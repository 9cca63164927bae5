package main

import (
	"bufio"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/examples/chatserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 5 * time.Second

// session is one run of the command, its stdin and stdout as pipes.
type session struct {
	stdin *io.PipeWriter
	lines chan string
	done  chan error
}

func start(t *testing.T, url, name string) *session {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &session{stdin: inW, lines: make(chan string, 100), done: make(chan error, 1)}
	go func() {
		err := run(context.Background(), []string{"-url", url, "-name", name, "-room", "lobby"}, inR, outW)
		_ = outW.Close()
		s.done <- err
	}()
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = inW.Close() // the end of input leaves the room and ends the command
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(wait):
			t.Errorf("%s did not end with its input", name)
		}
		for range s.lines {
		}
	})
	return s
}

func (s *session) typeLine(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// expect waits for an output line that contains want.
func (s *session) expect(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(wait)
	var seen []string
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				t.Fatalf("output ended without %q; it had %q", want, seen)
			}
			seen = append(seen, line)
			if strings.Contains(line, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q in the output; it had %q", want, seen)
		}
	}
}

// A line typed in one terminal appears in the other's, with presence.
func TestTwoTerminals(t *testing.T) {
	handler, srv, err := chatserver.New(troupe.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(handler) // 127.0.0.1
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"

	ann := start(t, url, "ann")
	ann.expect(t, "* you are ann")
	ann.expect(t, "* in lobby: ann")
	bob := start(t, url, "bob")
	bob.expect(t, "* in lobby: ")
	ann.expect(t, "* bob joined")

	ann.typeLine(t, "hello from ann")
	bob.expect(t, "ann: hello from ann")
	ann.expect(t, "ann: hello from ann")
	bob.typeLine(t, "hi ann")
	ann.expect(t, "bob: hi ann")

	bob.typeLine(t, "/history")
	bob.expect(t, "#1 ann: hello from ann")
	bob.typeLine(t, "/quit")
	ann.expect(t, "* bob left")
}
