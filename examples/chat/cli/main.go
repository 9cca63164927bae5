// Command cli is a terminal client of the chat example, on the Go client
// (github.com/troupehq/troupe/client):
//
//	go run ./examples/chat/cli -url ws://127.0.0.1:8080/ws -name ann -room lobby
//
// It prints the room's messages and who comes and goes, and publishes every
// line typed; /quit (or the end of input) leaves. After a reconnect the room
// resumes where it left off; when messages were lost it says so and prints
// the newest ones again.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/troupehq/troupe/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "cli:", err)
		os.Exit(1)
	}
}

type welcome struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type body struct {
	Text string `json:"text"`
}

// run is the whole command: it returns when in ends, "/quit" is typed or
// ctx ends.
func run(ctx context.Context, args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("cli", flag.ContinueOnError)
	wsURL := fs.String("url", "ws://127.0.0.1:8080/ws", "the chat's WebSocket URL (several: comma-separated nodes)")
	name := fs.String("name", "anon", "your display name")
	roomName := fs.String("room", "lobby", "the room to join")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var urls []string
	for _, s := range strings.Split(*wsURL, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		q := u.Query()
		q.Set("name", *name) // the chat server takes the display name here
		u.RawQuery = q.Encode()
		urls = append(urls, u.String())
	}

	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", a...)
	}
	c, err := client.New(urls, &client.Options{
		OnStatus: func(s client.Status) {
			switch s.State {
			case client.Connected:
				if s.Reconnected {
					say("* reconnected")
				}
			case client.Disconnected:
				say("* disconnected (%v); retrying in %v", s.Err, s.Retry.Round(time.Millisecond))
			}
		},
		OnError: func(err error) { say("* error: %v", err) },
	})
	if err != nil {
		return err
	}
	defer c.Close()
	client.Handle(c, "chat.welcome", func(w welcome) { say("* you are %s", w.Name) })
	room := c.Room(*roomName)
	room.OnMessage(func(m client.Message) {
		var b body
		_ = m.Decode(&b)
		say("%s: %s", displayName(m.From), b.Text)
	})
	room.OnPresence(func(p client.Presence) {
		if p.Reset {
			var names []string
			for _, m := range p.Members {
				names = append(names, displayName(m.ID))
			}
			say("* in %s: %s", p.Room, strings.Join(names, ", "))
			return
		}
		for _, m := range p.Joins {
			say("* %s joined", displayName(m.ID))
		}
		for _, m := range p.Leaves {
			say("* %s left", displayName(m.ID))
		}
	})
	room.OnRecover(func(r client.Recover) {
		if !r.Recovered {
			say("* missed messages after #%d: reload with /history", r.Since)
		}
	})
	room.OnError(func(err error) { say("* rejoin refused: %v", err) })

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Connect(dctx); err != nil {
		return err
	}
	if _, err := room.Join(dctx, map[string]string{"name": *name}); err != nil {
		return fmt.Errorf("join %s: %w", *roomName, err)
	}

	// Lines are read on a goroutine of their own so that ctx can end the
	// command while it waits for input; the goroutine ends with the input.
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case line, ok = <-lines:
		}
		if !ok || line == "/quit" {
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = room.Leave(lctx)
			cancel()
			return nil
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if line == "/history" {
			msgs, err := room.History(rctx, 0, 20)
			for _, m := range msgs {
				var b body
				_ = m.Decode(&b)
				say("  #%d %s: %s", m.Seq, displayName(m.From), b.Text)
			}
			if err != nil {
				say("* history: %v", err)
			}
		} else if _, err := room.Publish(rctx, body{Text: line}); err != nil {
			say("* not sent: %v", err)
		}
		cancel()
	}
}

// displayName is the name part of a chat member id ("ann#k3x7qa" -> "ann").
func displayName(id string) string {
	if i := strings.LastIndexByte(id, '#'); i > 0 {
		return id[:i]
	}
	return id
}
