// Package e2e tests package client against real Troupe servers. It is a
// module of its own so that the client's module needs nothing of the
// server's.
package e2e
