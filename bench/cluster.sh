#!/usr/bin/env bash
# bench/cluster.sh: the same wsload fan-out against one Troupe node and
# against three nodes sharing their rooms through NATS JetStream, and print
# delivered/s and p99 latency of each as ratios to the single node.
#
#   bench/cluster.sh                 # 3 rounds of 5 s
#   ROUNDS=5 DURATION=3s bench/cluster.sh
#
# Setups, in alternation every round, each started fresh:
#   one        one benchserver, no backplane (the single-node default)
#   one-nats   one benchserver embedding a one-server NATS (replicas 1)
#   three      three benchservers, each embedding a NATS server routed to
#              the others' (replicas 3)
# wsload knows one URL: bench/spread, a TCP proxy, hands its connections to
# the nodes in turn (to the single node for one and one-nats, the same hop).
# The servers run on CPU 1 (SERVER_CPU), wsload and the proxy on CPU 0
# (LOAD_CPU): three nodes and their NATS servers share the one core that a
# single node has to itself, so these ratios show what the backplane costs,
# not what three machines would give.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WSLOAD_DIR=${WSLOAD_DIR:-$repo/../shared/bench/wsload}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
# wsload arguments besides -url and -duration.
SCENARIO=${SCENARIO:-fanout -rooms 10 -members 99 -publishers 1 -rate 0 -window 16 -size 128}

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "building wsload, benchserver and spread into $work" >&2
(cd "$WSLOAD_DIR" && go build -o "$work/wsload" .)
(cd "$repo" && go build -o "$work/benchserver" ./examples/benchserver && go build -o "$work/spread" ./bench/spread)

# wait_http waits until something answers HTTP on 127.0.0.1:$1.
wait_http() {
	for _ in $(seq 1 600); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on port $1" >&2
	return 1
}

# start_setup NAME: starts the servers of a setup and the proxy on 19400;
# sets servers to their pids.
start_setup() {
	local name=$1 dir=$work/$1-$RANDOM
	servers=()
	case $name in
	one)
		taskset -c "$SERVER_CPU" "$work/benchserver" -addr 127.0.0.1:19401 >"$dir.log" 2>&1 &
		servers+=($!)
		backends=127.0.0.1:19401
		;;
	one-nats)
		taskset -c "$SERVER_CPU" "$work/benchserver" -addr 127.0.0.1:19401 -node n1 \
			-cluster 127.0.0.1:19501 -data "$dir/n1" >"$dir.log" 2>&1 &
		servers+=($!)
		backends=127.0.0.1:19401
		;;
	three)
		for i in 1 2 3; do
			local routes=()
			for j in 1 2 3; do [[ $j != "$i" ]] && routes+=("127.0.0.1:1950$j"); done
			taskset -c "$SERVER_CPU" "$work/benchserver" -addr "127.0.0.1:1940$i" -node "n$i" \
				-cluster "127.0.0.1:1950$i" -routes "$(IFS=,; echo "${routes[*]}")" \
				-data "$dir/n$i" >"$dir-n$i.log" 2>&1 &
			servers+=($!)
		done
		backends=127.0.0.1:19401,127.0.0.1:19402,127.0.0.1:19403
		;;
	esac
	pids+=("${servers[@]}")
	for b in ${backends//,/ }; do wait_http "${b##*:}"; done
	taskset -c "$LOAD_CPU" "$work/spread" -listen 127.0.0.1:19400 -to "$backends" 2>>"$dir.log" &
	proxy=$!
	pids+=("$proxy")
	sleep 0.3
}

stop_setup() {
	kill "$proxy" "${servers[@]}" 2>/dev/null || true
	wait "$proxy" "${servers[@]}" 2>/dev/null || true
}

results=$work/results.tsv
for round in $(seq 1 "$ROUNDS"); do
	for setup in one one-nats three; do
		start_setup "$setup"
		# shellcheck disable=SC2086
		json=$(taskset -c "$LOAD_CPU" "$work/wsload" $SCENARIO -duration "$DURATION" \
			-url ws://127.0.0.1:19400/ws -json | tail -n 1)
		stop_setup
		line=$(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
print("\t".join(str(x) for x in [d["delivered_per_s"], d["latency"]["p99_ms"], d["lost"], d["order_violations"], d["cpu"]["other_cpu_pct"]]))
' "$json")
		printf '%s\t%s\t%s\n' "$round" "$setup" "$line" | tee -a "$results" >&2
	done
done

python3 - "$results" "$SCENARIO" "$DURATION" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = {}
for r, setup, dps, p99, lost, order, other in rows:
    by.setdefault(r, {})[setup] = (float(dps), float(p99), int(lost), int(order))
print(f"wsload {sys.argv[2]} -duration {sys.argv[3]}, {len(by)} rounds\n")
print("| setup | delivered/s (median) | p99 ms (median) | delivered/s vs one | p99 vs one | lost | order violations |")
print("|---|---:|---:|---:|---:|---:|---:|")
for setup in ["one", "one-nats", "three"]:
    runs = [v[setup] for v in by.values() if setup in v]
    ratios = [v[setup][0] / v["one"][0] for v in by.values() if setup in v and "one" in v]
    p99r = [v[setup][1] / v["one"][1] for v in by.values() if setup in v and "one" in v]
    print(f"| {setup} | {statistics.median(r[0] for r in runs):,.0f} | {statistics.median(r[1] for r in runs):.1f} | "
          f"{statistics.median(ratios):.2f}x | {statistics.median(p99r):.2f}x | {sum(r[2] for r in runs)} | {sum(r[3] for r in runs)} |")
PY
