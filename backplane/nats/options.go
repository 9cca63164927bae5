package nats

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/troupehq/troupe/rooms"
)

// Defaults for Options and ServerOptions.
const (
	// DefaultStream is the JetStream stream that holds every room's log.
	DefaultStream = "TROUPE_ROOMS"
	// DefaultPresenceInterval is how often a node repeats its member lists:
	// the lists travel on core NATS, which keeps nothing, so repetition is
	// what lets a node that missed one (or joined late) catch up.
	DefaultPresenceInterval = time.Second
	// DefaultFeedHeartbeat is Options.FeedHeartbeat's default.
	DefaultFeedHeartbeat = 2 * time.Second
	// DefaultTimeout bounds a Publish or Follow whose context has no
	// deadline, so that a room never waits forever on a cluster that lost
	// its quorum.
	DefaultTimeout = 5 * time.Second
	// DefaultHost is where an embedded server listens: loopback, so that a
	// server started without thought is not reachable from the network.
	DefaultHost = "127.0.0.1"
	// DefaultCluster names the cluster of embedded servers that set a
	// cluster port but no cluster name.
	DefaultCluster = "troupe"

	// duplicateWindow is how long the stream remembers message IDs, so that
	// a publish retried after a lost acknowledgement is not stored twice.
	duplicateWindow = 2 * time.Minute
	// maxReplicas is JetStream's limit.
	maxReplicas = 5
)

// Options configures Open. Exactly one of URL, Embedded and Server says
// where JetStream is.
type Options struct {
	// URL connects to a NATS cluster that runs elsewhere, for example
	// "nats://a:4222,nats://b:4222"; the client moves between the listed
	// (and discovered) servers on its own.
	URL string
	// Embedded starts one nats-server inside this process, so that a set of
	// application nodes can be their own cluster without running anything
	// else. Close shuts it down.
	Embedded *ServerOptions
	// Server connects in process to a nats-server that this process already
	// runs (see Backplane.Server), so that two backplanes, or the
	// application and the backplane, share one server. Close leaves it
	// running.
	Server *server.Server
	// NATSOptions are applied to the client connection after the
	// backplane's own: credentials, TLS, reconnect tuning.
	NATSOptions []natsgo.Option

	// Node names this node among those that share the stream. Default: the
	// embedded server's name, else a random ID. A node that restarts under
	// the same name takes its place in presence at once.
	Node string
	// Stream is the JetStream stream that holds the rooms. Default
	// DefaultStream. Every node of a deployment must use the same stream
	// and the same options for it: the last node to open wins.
	Stream string
	// Replicas is how many servers keep each message. Default: for an
	// embedded server, one per server the routes name (itself included),
	// at most 3; elsewhere 3 when the server is part of a cluster, else 1.
	// For an embedded server it is clamped to that cluster size, and always
	// to 5, JetStream's limit.
	Replicas int
	// HistoryLength is how many messages the stream keeps per room (its
	// MaxMsgsPerSubject). Default rooms.DefaultHistoryMessages.
	HistoryLength int
	// MaxAge drops messages older than this; 0 keeps them while they are
	// among the newest HistoryLength. A room silent for longer than MaxAge
	// loses its whole log and numbers from 1 again under the same Feed
	// Epoch, so leave it 0 unless clients never resume across that gap.
	MaxAge time.Duration
	// Memory keeps the stream in memory instead of on disk: for tests, as a
	// restart of every server loses it.
	Memory bool
	// PresenceInterval is how often this node repeats its member lists.
	// Default DefaultPresenceInterval.
	PresenceInterval time.Duration
	// PresenceTTL is how long another node's list lives without being
	// heard again. Default three intervals, so that one lost message does
	// not make members blink out.
	PresenceTTL time.Duration
	// FeedHeartbeat is how often the server signals an idle feed. A feed
	// whose consumer lived on a server that went away notices it after two
	// missed beats and recreates the consumer on a live server, so this
	// bounds how long a room stalls on this node after a server leaves;
	// each followed room costs one small message per beat. Default
	// DefaultFeedHeartbeat.
	FeedHeartbeat time.Duration
	// Timeout bounds Publish and Follow when their context has no deadline.
	// Default DefaultTimeout. Open waits as long as its context allows.
	Timeout time.Duration
	// Logger receives the backplane's and the embedded server's logs.
	// Default slog.Default().
	Logger *slog.Logger
}

// ServerOptions configures the embedded nats-server (Options.Embedded).
type ServerOptions struct {
	// Name names the server in its cluster; it must be unique there.
	// Default Options.Node, else a random ID.
	Name string
	// Host is the address the client and cluster ports listen on. Default
	// DefaultHost.
	Host string
	// Port is the client port, for other processes (nats CLI, nodes that
	// connect with Options.URL). 0 means NATS's default, 4222; -1 a random
	// free port. This process itself always connects in process.
	Port int
	// NoListen opens no client port at all: only this process uses the
	// server, through its in-process connection. It rules out ClusterPort:
	// nats-server starts its routes only once its client port listens.
	NoListen bool
	// Cluster names the cluster. Default DefaultCluster when ClusterPort is
	// set.
	Cluster string
	// ClusterHost is the address the cluster port listens on. Default Host.
	ClusterHost string
	// ClusterPort is the port the other servers route to; 0 runs the
	// server alone, -1 picks a random free port.
	ClusterPort int
	// Routes are the cluster ports of the other servers,
	// "nats-route://host:port". Listing this server's own route too is
	// harmless, so every server can be given the same list.
	Routes []string
	// StoreDir is where JetStream keeps its files, one directory per
	// server. Required unless Options.Memory (a temporary directory then
	// holds JetStream's bookkeeping and is removed on Close).
	StoreDir string
	// SyncAlways makes JetStream fsync every message before acknowledging
	// it. JetStream fsyncs lazily, by default every 2 minutes: a process
	// crash loses nothing (the kernel has the data), but a machine crash
	// can lose acknowledged messages of that window. With Replicas 3 a
	// single machine's crash loses nothing either, since a message is
	// acknowledged once a majority holds it; SyncAlways covers the whole
	// cluster losing power, at a large cost in throughput.
	SyncAlways bool
	// SyncInterval replaces the 2 minutes between fsyncs.
	SyncInterval time.Duration
}

// config is Options with the defaults filled in.
type config struct {
	Options
	clusterSize int // embedded: servers the routes name, this one included
	tempStore   bool
}

func (o Options) withDefaults() (config, error) {
	c := config{Options: o}
	n := 0
	for _, set := range []bool{o.URL != "", o.Embedded != nil, o.Server != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return c, errors.New("nats: set exactly one of Options.URL, Options.Embedded and Options.Server")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.HistoryLength <= 0 {
		c.HistoryLength = rooms.DefaultHistoryMessages
	}
	if c.PresenceInterval <= 0 {
		c.PresenceInterval = DefaultPresenceInterval
	}
	if c.PresenceTTL <= 0 {
		c.PresenceTTL = 3 * c.PresenceInterval
	}
	if c.FeedHeartbeat <= 0 {
		c.FeedHeartbeat = DefaultFeedHeartbeat
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxAge < 0 {
		return c, errors.New("nats: negative MaxAge")
	}
	if o.Embedded != nil {
		e := *o.Embedded
		if e.Name == "" {
			e.Name = c.Node
		}
		if e.Name == "" {
			e.Name = nuid.Next()
		}
		if e.Host == "" {
			e.Host = DefaultHost
		}
		if e.ClusterHost == "" {
			e.ClusterHost = e.Host
		}
		if len(e.Routes) > 0 && e.ClusterPort == 0 {
			return c, errors.New("nats: ServerOptions.Routes needs a ClusterPort")
		}
		if e.NoListen && e.ClusterPort != 0 {
			return c, errors.New("nats: ServerOptions.NoListen cannot be combined with ClusterPort (use Port -1 for a random client port)")
		}
		if e.ClusterPort != 0 && e.Cluster == "" {
			e.Cluster = DefaultCluster
		}
		if e.StoreDir == "" && !o.Memory {
			return c, errors.New("nats: ServerOptions.StoreDir is required for file storage")
		}
		others, err := otherRoutes(e)
		if err != nil {
			return c, err
		}
		c.clusterSize = 1 + others
		c.Embedded = &e
		if c.Node == "" {
			c.Node = e.Name
		}
		if c.Replicas <= 0 {
			c.Replicas = min(3, c.clusterSize)
		}
		c.Replicas = min(c.Replicas, c.clusterSize)
	}
	if c.Node == "" {
		c.Node = nuid.Next()
	}
	c.Replicas = min(c.Replicas, maxReplicas)
	return c, nil
}

// otherRoutes counts the distinct routes that do not point at this server's
// own cluster port, which tells how large the cluster is meant to be.
func otherRoutes(e ServerOptions) (int, error) {
	own := net.JoinHostPort(e.ClusterHost, strconv.Itoa(e.ClusterPort))
	seen := map[string]bool{}
	for _, r := range e.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return 0, fmt.Errorf("nats: bad route %q", r)
		}
		if u.Host == own {
			continue
		}
		seen[u.Host] = true
	}
	return len(seen), nil
}
