#!/usr/bin/env bash
# bench/sse.sh: Troupe's two transports side by side, one load generator
# (bench/sseload) for both: the echo and fan-out scenarios over WebSocket
# and over the HTTP fallback (SSE down, POST up), against one
# examples/benchserver, in alternation, and the SSE/WebSocket ratios.
#
#   bench/sse.sh                # 3 rounds of 3 s per scenario and transport
#   ROUNDS=5 DURATION=5s bench/sse.sh
#
# The server runs on CPU 1 and the load generator on CPU 0, on 127.0.0.1.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3s}
ADDR=${ADDR:-127.0.0.1:9310}
cd "$(dirname "$0")/.."
BIN=$(mktemp -d)
trap 'kill "$SRV" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$BIN"' EXIT
go build -o "$BIN/sseload" ./bench/sseload
(cd examples/benchserver && go build -o "$BIN/benchserver" .)
taskset -c 1 "$BIN/benchserver" -addr "$ADDR" 2>"$BIN/server.log" &
SRV=$!
for _ in $(seq 50); do
	curl -fs "http://$ADDR/metrics" >/dev/null 2>&1 && break
	sleep 0.1
done
run() { taskset -c 0 "$BIN/sseload" -url "ws://$ADDR/ws" -transport "$1" -duration "$DURATION" "${@:2}"; }
for round in $(seq "$ROUNDS"); do
	for t in websocket sse; do
		run "$t" echo -conns 50 -window 8 -size 64
		run "$t" fanout -rooms 10 -members 50 -window 16 -size 128
	done
done | tee "$BIN/results.jsonl" | python3 -c '
import json, sys, statistics
rs = [json.loads(l) for l in sys.stdin]
med = {}
for s in ("echo", "fanout"):
    for t in ("websocket", "sse"):
        med[s, t] = statistics.median(r["per_second"] for r in rs if r["scenario"] == s and r["transport"] == t)
print("| scenario | WebSocket msg/s | SSE msg/s | SSE / WebSocket |")
print("|---|---:|---:|---:|")
for s in ("echo", "fanout"):
    w, e = med[s, "websocket"], med[s, "sse"]
    print(f"| {s} | {w:,.0f} | {e:,.0f} | {e / w:.2f} |")
'
