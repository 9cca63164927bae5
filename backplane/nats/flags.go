package nats

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// Flags are the command-line flags of a command that can run alone or as
// one node of several: joined to a NATS cluster that runs elsewhere
// (-nats), or embedding a NATS server routed to the other nodes' (-cluster,
// -routes). The chat and bench servers in the repository's examples use
// them:
//
//	var cluster nats.Flags
//	cluster.Register(flag.CommandLine)
//	flag.Parse()
//	if cluster.Enabled() {
//		opts, err := cluster.Options()
//		…
//		bp, err := nats.Open(ctx, opts)
//	}
type Flags struct {
	Node     string // -node
	URL      string // -nats
	Cluster  string // -cluster host:port
	Routes   string // -routes host:port,…
	NATSPort int    // -nats-port
	Data     string // -data
	Replicas int    // -replicas
}

// Register defines the flags on fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Node, "node", "", "this node's name, unique in the cluster (default: from the -cluster address)")
	fs.StringVar(&f.URL, "nats", "", "join the NATS cluster at this URL (nats://host:4222,...) instead of embedding one")
	fs.StringVar(&f.Cluster, "cluster", "", "embed a NATS server whose cluster port listens on host:port")
	fs.StringVar(&f.Routes, "routes", "", "the other nodes' -cluster addresses, comma-separated (host:port,...); without them the node runs its NATS server alone")
	fs.IntVar(&f.NATSPort, "nats-port", 0, "client port of the embedded NATS server, for tools such as the nats CLI (0: a random free port)")
	fs.StringVar(&f.Data, "data", "", "directory of the embedded server's JetStream files (default: data/<node>)")
	fs.IntVar(&f.Replicas, "replicas", 0, "copies of each room's log (default: one per node, up to 3)")
}

// Enabled reports whether the flags ask for a backplane at all.
func (f *Flags) Enabled() bool { return f.URL != "" || f.Cluster != "" }

// Options returns the Options the flags describe.
func (f *Flags) Options() (Options, error) {
	if f.URL != "" && f.Cluster != "" {
		return Options{}, errors.New("nats: -nats and -cluster exclude each other")
	}
	if f.Routes != "" && f.Cluster == "" {
		return Options{}, errors.New("nats: -routes needs -cluster")
	}
	opts := Options{Node: f.Node, Replicas: f.Replicas}
	if f.URL != "" {
		opts.URL = f.URL
		return opts, nil
	}
	host, portText, err := net.SplitHostPort(f.Cluster)
	if err != nil {
		return Options{}, fmt.Errorf("nats: -cluster: %w", err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port <= 0 {
		return Options{}, fmt.Errorf("nats: -cluster: bad port %q", portText)
	}
	if opts.Node == "" {
		opts.Node = "node-" + strings.NewReplacer(".", "-", ":", "-").Replace(host) + "-" + portText
	}
	e := &ServerOptions{Name: opts.Node, Host: host, ClusterPort: port, Port: f.NATSPort, StoreDir: f.Data}
	if e.Port == 0 {
		// nats-server starts its routes only after its client port, so a
		// clustered server needs one, even if only this process uses it.
		e.Port = -1
	}
	if e.StoreDir == "" {
		e.StoreDir = filepath.Join("data", opts.Node)
	}
	for _, r := range strings.Split(f.Routes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			e.Routes = append(e.Routes, "nats-route://"+r)
		}
	}
	if len(e.Routes) == 0 {
		// A clustered JetStream server waits for peers that would never
		// come: without routes the node runs its server alone.
		e.ClusterPort = 0
	}
	opts.Embedded = e
	return opts, nil
}
