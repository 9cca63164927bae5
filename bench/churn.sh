#!/usr/bin/env bash
# bench/churn.sh: start a server on CPU 1, run bench/churn against it on
# CPU 0, print churn's samples, stop the server.
#
#   bench/churn.sh SERVER_BINARY CLIENTS DURATION [churn flags...]
#
# SERVER_BINARY is a build of examples/benchserver or examples/chat (told
# apart by name: a path containing "chat" is the chat example, whose bodies
# churn then shapes as {"text":…}). The server gets the caller's
# environment (WEBSOCKET_*, TROUPE_*); PORT (19400) is its port.
set -euo pipefail
server=$1 clients=$2 duration=$3
shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
port=${PORT:-19400}
churn=${CHURN:-}
if [[ -z $churn ]]; then
	churn=$(mktemp -d)/churn
	(cd "$repo" && go build -o "$churn" ./bench/churn)
fi
shape=()
ws=ws://127.0.0.1:$port/ws
if [[ $server == *chat* ]]; then
	shape=(-shape chat)
	ws="$ws?name=churn"
fi
taskset -c 1 "$server" -addr 127.0.0.1:$port >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
	curl -fs -o /dev/null http://127.0.0.1:$port/metrics 2>/dev/null && break
	sleep 0.1
done
sleep 1
taskset -c 0 "$churn" -url "$ws" -pid $pid -metrics http://127.0.0.1:$port/metrics \
	-n "$clients" -d "$duration" "${shape[@]}" "$@"
