#!/usr/bin/env bash
# bench/floor.sh: connect + join (5,000 connections into 100 rooms) against
# six servers in alternation, each run on a fresh server and port:
#
#   centrifuge-hist  the centrifuge peer with -history, measured with cfload
#   floor            bench/floor: net/http + coder/websocket and nothing else
#   baseline         bench/baseline: a plain hand-written hub on the same two
#   troupe-plain     examples/benchserver -plain: Troupe with no rooms (a
#                    typed handler answers room.join)
#   troupe           examples/benchserver (the room protocol: members, presence)
#   troupe-counted   the same with TROUPE_PRESENCE_LIMIT=1 (rooms count
#                    their members instead of listing them)
#
# and prints connections per second and per server CPU-second, the medians
# over the rounds, each median's ratio to centrifuge-hist's, and the
# connections over all rounds that failed, and that did not get wsload's
# broadcast after the hold (BENCHMARKS.md, "The floor under connect + join").
#
#   bench/floor.sh            # 5 rounds
#   bench/floor.sh -n 3
#
# The servers run on CPU 1 and the load generators on CPU 0 (taskset),
# everything on 127.0.0.1. SHARED_BENCH is the folder holding wsload, cfload
# and the centrifuge peer (default ../shared/bench next to the repository).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$repo/../shared/bench}
ROUNDS=5
while getopts "n:h" opt; do
	case $opt in
	n) ROUNDS=$OPTARG ;;
	h) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;/^set -e/d'; exit 0 ;;
	*) exit 2 ;;
	esac
done

bin=$(mktemp -d "${TMPDIR:-/tmp}/troupe-floor.XXXXXX")
spid=""
cleanup() {
	[ -n "$spid" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null
	rm -rf "$bin"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

(cd "$repo" && go build -o "$bin/troupe" ./examples/benchserver &&
	go build -o "$bin/floor" ./bench/floor && go build -o "$bin/baseline" ./bench/baseline)
(cd "$SHARED_BENCH/wsload" && go build -o "$bin/wsload" .)
(cd "$SHARED_BENCH/cfload" && go build -o "$bin/cfload" .)
(cd "$SHARED_BENCH/centrifuge" && go build -o "$bin/centrifuge" .)

port=$((22000 + RANDOM % 1000))
run() { # name load server args...
	local name=$1 load=$2
	shift 2
	port=$((port + 1))
	taskset -c 1 "$@" -addr "127.0.0.1:$port" >/dev/null 2>&1 &
	spid=$!
	for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
	timeout -k 5 120 taskset -c 0 "$bin/$load" conns -n 5000 -concurrency 100 -rooms 100 -hold 1s \
		-url "ws://127.0.0.1:$port/ws" -pid "$spid" -json 2>/dev/null | tail -1 |
		python3 -c 'import json,sys; r=json.load(sys.stdin); print(sys.argv[1], r["connects_per_s"], r["cpu"]["server_cpu_pct"], r["failed"], r["alive_after_hold"])' "$name" |
		tee -a "$bin/results"
	kill "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
	spid=""
}

for r in $(seq "$ROUNDS"); do
	echo "round $r" >&2
	run centrifuge-hist cfload "$bin/centrifuge" -history
	run floor wsload "$bin/floor"
	run baseline wsload "$bin/baseline"
	run troupe-plain wsload "$bin/troupe" -plain
	run troupe wsload "$bin/troupe"
	run troupe-counted wsload env TROUPE_PRESENCE_LIMIT=1 "$bin/troupe"
done

python3 - "$bin/results" <<'PY'
import statistics, sys
runs, lost = {}, {}
for line in open(sys.argv[1]):
    name, rate, cpu, failed, alive = line.split()
    runs.setdefault(name, []).append((float(rate), float(rate) / (float(cpu) / 100)))
    f, d = lost.get(name, (0, 0))
    lost[name] = (f + int(failed), d + 5000 - int(alive))
med = {n: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for n, v in runs.items()}
peer = med["centrifuge-hist"]
print(f"{'server':16} {'conns/s':>9} {'vs peer':>8} {'per CPU-s':>10} {'vs peer':>8} {'failed':>7} {'not alive':>10}")
for n, (rate, per_cpu) in med.items():
    # The floor and troupe-plain keep no rooms: wsload's liveness
    # broadcast after the hold (a room.publish) reaches nobody there.
    dead = "-" if n in ("floor", "troupe-plain") else lost[n][1]
    print(f"{n:16} {rate:9.0f} {rate / peer[0]:7.2f}x {per_cpu:10.0f} {per_cpu / peer[1]:7.2f}x {lost[n][0]:7d} {dead:>10}")
PY
