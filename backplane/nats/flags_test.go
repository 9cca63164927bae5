package nats

import (
	"flag"
	"io"
	"path/filepath"
	"reflect"
	"testing"
)

// parseFlags parses args as a command would and returns the flags and the
// Options they describe.
func parseFlags(t *testing.T, args ...string) (*Flags, Options, error) {
	t.Helper()
	var f Flags
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	opts, err := f.Options()
	return &f, opts, err
}

// TestFlags checks what the command-line flags turn into.
func TestFlags(t *testing.T) {
	f, _, _ := parseFlags(t)
	if f.Enabled() {
		t.Fatal("no flags: a backplane is asked for")
	}

	f, opts, err := parseFlags(t, "-cluster", "127.0.0.1:6222", "-routes", "127.0.0.1:6223, 127.0.0.1:6224", "-replicas", "3")
	if err != nil || !f.Enabled() {
		t.Fatalf("embedded: %v, enabled %v", err, f.Enabled())
	}
	want := &ServerOptions{Name: "node-127-0-0-1-6222", Host: "127.0.0.1", ClusterPort: 6222, Port: -1,
		StoreDir: filepath.Join("data", "node-127-0-0-1-6222"),
		Routes:   []string{"nats-route://127.0.0.1:6223", "nats-route://127.0.0.1:6224"}}
	if !reflect.DeepEqual(opts.Embedded, want) || opts.Node != want.Name || opts.Replicas != 3 || opts.URL != "" {
		t.Fatalf("embedded options %+v / %+v, want node %s and %+v", opts, opts.Embedded, want.Name, want)
	}

	_, opts, _ = parseFlags(t, "-node", "a", "-cluster", "127.0.0.1:6222", "-nats-port", "4333", "-data", "/srv/a")
	if opts.Node != "a" || opts.Embedded.Name != "a" || opts.Embedded.Port != 4333 || opts.Embedded.StoreDir != "/srv/a" {
		t.Fatalf("explicit node, port, data: %+v / %+v", opts, opts.Embedded)
	}

	_, opts, _ = parseFlags(t, "-cluster", "127.0.0.1:6222")
	if opts.Embedded == nil || opts.Embedded.ClusterPort != 0 || len(opts.Embedded.Routes) != 0 {
		t.Fatalf("-cluster without -routes must run the server alone: %+v", opts.Embedded)
	}

	_, opts, _ = parseFlags(t, "-nats", "nats://127.0.0.1:4222")
	if opts.URL != "nats://127.0.0.1:4222" || opts.Embedded != nil {
		t.Fatalf("-nats: %+v", opts)
	}

	for _, bad := range [][]string{
		{"-nats", "nats://x", "-cluster", "127.0.0.1:1"},
		{"-routes", "127.0.0.1:1"},
		{"-cluster", "no-port"},
		{"-cluster", "127.0.0.1:http"},
	} {
		if _, _, err := parseFlags(t, bad...); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
