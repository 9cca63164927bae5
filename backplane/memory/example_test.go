package memory_test

import (
	"fmt"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/backplane/memory"
)

// Two servers in one process that share their rooms, as two nodes of a
// deployment would: a client of either sees one order and one history.
func Example() {
	cluster := memory.NewCluster(1000)
	var servers []*troupe.Server
	for _, name := range []string{"node-a", "node-b"} {
		srv, err := troupe.New(troupe.Config{RoomProtocol: true, Backplane: cluster.Node(name)})
		if err != nil {
			panic(err)
		}
		defer srv.Close()
		servers = append(servers, srv) // mount each with http.Handle("/ws", srv)
	}
	fmt.Println(len(servers), "nodes")
	// Output: 2 nodes
}
