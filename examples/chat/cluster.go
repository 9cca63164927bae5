package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	natsbp "github.com/troupehq/troupe/backplane/nats"
)

// clusterFlags are the flags that make the chat one node of several: either
// joined to a NATS cluster that runs elsewhere (-nats), or running its own
// NATS server, routed to the other nodes' (-cluster, -routes). Without them
// the chat is a single process that opens no port but its own.
type clusterFlags struct {
	node     *string
	natsURL  *string
	cluster  *string
	routes   *string
	natsPort *int
	data     *string
	replicas *int
}

func registerClusterFlags(fs *flag.FlagSet) *clusterFlags {
	return &clusterFlags{
		node:     fs.String("node", "", "this node's name, unique in the cluster (default: the -cluster address)"),
		natsURL:  fs.String("nats", "", "join the NATS cluster at this URL (nats://host:4222,...) instead of embedding one"),
		cluster:  fs.String("cluster", "", "embed a NATS server whose cluster port listens on host:port"),
		routes:   fs.String("routes", "", "the other nodes' -cluster addresses, comma-separated (host:port,...)"),
		natsPort: fs.Int("nats-port", 0, "client port of the embedded NATS server, for tools such as the nats CLI (0: a random free port)"),
		data:     fs.String("data", "", "directory for the embedded server's JetStream files (default: data/<node>)"),
		replicas: fs.Int("replicas", 0, "copies of each room's log (default: up to 3, one per node)"),
	}
}

// enabled reports whether any cluster flag was given.
func (f *clusterFlags) enabled() bool { return *f.natsURL != "" || *f.cluster != "" }

// open starts the backplane the flags describe.
func (f *clusterFlags) open(ctx context.Context, logger *slog.Logger) (*natsbp.Backplane, error) {
	if *f.natsURL != "" && *f.cluster != "" {
		return nil, errors.New("-nats and -cluster exclude each other")
	}
	if *f.routes != "" && *f.cluster == "" {
		return nil, errors.New("-routes needs -cluster")
	}
	opts := natsbp.Options{Node: *f.node, Replicas: *f.replicas, Logger: logger}
	if *f.natsURL != "" {
		opts.URL = *f.natsURL
		return natsbp.Open(ctx, opts)
	}
	host, portText, err := net.SplitHostPort(*f.cluster)
	if err != nil {
		return nil, fmt.Errorf("-cluster: %w", err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("-cluster: bad port %q", portText)
	}
	if opts.Node == "" {
		opts.Node = "node-" + host + "-" + portText
	}
	dir := *f.data
	if dir == "" {
		dir = filepath.Join("data", opts.Node)
	}
	e := &natsbp.ServerOptions{
		Name:        opts.Node,
		Host:        host,
		ClusterPort: port,
		StoreDir:    dir,
		Port:        *f.natsPort,
	}
	if e.Port == 0 {
		// nats-server starts its routes only after its client port, so a
		// clustered server needs one, even if only this process uses it.
		e.Port = -1
	}
	for _, r := range strings.Split(*f.routes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			e.Routes = append(e.Routes, "nats-route://"+r)
		}
	}
	opts.Embedded = e
	return natsbp.Open(ctx, opts)
}
