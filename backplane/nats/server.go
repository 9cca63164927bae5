package nats

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startServer starts the embedded nats-server and waits until it takes
// connections. JetStream's own readiness (a meta leader in a cluster) is
// awaited later, by creating the stream.
func startServer(ctx context.Context, c *config) (*server.Server, error) {
	e := c.Embedded
	storeDir := e.StoreDir
	if storeDir == "" {
		dir, err := os.MkdirTemp("", "troupe-jetstream-")
		if err != nil {
			return nil, fmt.Errorf("nats: %w", err)
		}
		storeDir, c.tempStore = dir, true
		e.StoreDir = dir
	}
	so := &server.Options{
		ServerName: e.Name,
		Host:       e.Host,
		Port:       e.Port,
		DontListen: e.NoListen,
		JetStream:  true,
		StoreDir:   storeDir,
		SyncAlways: e.SyncAlways,
		// Without NoSigs the server traps SIGINT and SIGTERM and exits the
		// process itself, before the application's graceful shutdown runs.
		NoSigs: true,
	}
	if e.SyncInterval > 0 {
		so.SyncInterval = e.SyncInterval
	}
	if e.ClusterPort != 0 {
		so.Cluster.Name = e.Cluster
		so.Cluster.Host = e.ClusterHost
		so.Cluster.Port = e.ClusterPort
		so.Routes = server.RoutesFromStr(strings.Join(e.Routes, ","))
	}
	srv, err := server.NewServer(so)
	if err != nil {
		c.removeTempStore()
		return nil, fmt.Errorf("nats: embedded server: %w", err)
	}
	l := c.Logger.With("component", "nats-server", "server", e.Name)
	srv.SetLoggerV2(serverLogger{l}, l.Enabled(ctx, slog.LevelDebug), false, false)
	srv.Start()

	wait := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = max(time.Until(dl), time.Millisecond)
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		srv.WaitForShutdown()
		c.removeTempStore()
		return nil, fmt.Errorf("nats: embedded server %q not ready within %s", e.Name, wait)
	}
	return srv, nil
}

func (c *config) removeTempStore() {
	if c.tempStore {
		os.RemoveAll(c.Embedded.StoreDir)
		c.tempStore = false
	}
}

// serverLogger routes the embedded server's logs into slog, so that they
// land wherever the application's go, with the same format.
type serverLogger struct{ l *slog.Logger }

func (s serverLogger) Noticef(format string, v ...any) { s.l.Info(fmt.Sprintf(format, v...)) }
func (s serverLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s serverLogger) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Tracef(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }

// Fatalf only logs: the server calls it for conditions it then handles by
// shutting down, and exiting the whole process is the application's call.
func (s serverLogger) Fatalf(format string, v ...any) { s.l.Error(fmt.Sprintf(format, v...)) }
