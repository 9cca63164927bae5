//go:build unix

package main

import "syscall"

// raiseFileLimit lifts the soft limit on open files to the hard limit: every
// connection is a file descriptor, and the usual soft limit (1024) would
// refuse connections long before memory runs out. Past the hard limit the
// system's configuration has to change (ulimit -Hn, LimitNOFILE).
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
