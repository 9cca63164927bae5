#!/usr/bin/env bash
# The one test command: sets up what the tests need on a fresh Debian
# machine that has only Go, then runs every test.
#
#   bash scripts/test.sh
#
# It installs (only what is missing): a C compiler for the race detector,
# Chromium for the browser test,
# Node.js and npm for the JavaScript client's tests, and the npm packages
# of package-lock.json (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."

# apt_install installs Debian packages, as root or through sudo.
apt_updated=0
apt_install() {
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		sudo=(sudo)
	fi
	if [ "$apt_updated" -eq 0 ]; then
		"${sudo[@]}" apt-get update -q
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@"
}

missing=()
# go test -race needs cgo, hence a C compiler.
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
# The JavaScript client's tests run under Node.js (20 or later is what
# they are written for; Debian's own nodejs works too).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "test.sh: installing ${missing[*]}"
	apt_install "${missing[@]}"
fi

# ---- Browser tests: install Chromium here when they need it. ----
# The chat example's browser test (tests/browser_test.go) drives Debian's
# chromium headless, and fails rather than skips without it.
if ! command -v chromium >/dev/null 2>&1; then
	echo "test.sh: installing chromium"
	apt_install chromium
fi
# ---- end of browser tests section ----

# The npm packages the tests use (ws), exactly as package-lock.json pins them.
if [ ! -f node_modules/ws/package.json ]; then
	echo "test.sh: npm ci"
	npm ci --no-audit --no-fund
fi

go version
node --version
# The modules of one workspace (go.work): the core, the NATS backplane, the
# Go client and its tests against real servers (client/e2e, a module of its
# own so that the client needs nothing of the server), and the example
# commands (the chat can embed NATS). The multi-process cluster test of the
# chat (examples/chat/kill_test.go) runs here too; only -short skips it.
go test -race -count=1 ./... ./backplane/nats/... ./client/... ./client/e2e/... ./examples/chat/... ./examples/benchserver/...
