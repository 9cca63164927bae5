#!/usr/bin/env bash
# bench/run.sh: run the wsload scenarios of BENCHMARKS.md against the
# baseline server (bench/baseline) and against Troupe (examples/benchserver),
# in alternation, and print the medians and the Troupe/baseline ratios.
#
#   bench/run.sh                      # every scenario, 3 rounds of 5 s
#   bench/run.sh -d 3s -n 5           # shorter windows, more rounds
#   bench/run.sh -s fanout-10x100,echo -o results/
#
# Each round runs every scenario against the baseline, then against Troupe
# (A B A B ...), each on a fresh server, so that drift on a shared machine
# hits both alike; ratios are the median over rounds of troupe/baseline of
# the two adjacent runs. A run during which other processes used more than
# MAX_OTHER % of a core is repeated (up to RETRIES times).
#
# The servers run on CPU 1 and wsload on CPU 0 (taskset), everything on
# 127.0.0.1. Every server this script starts is stopped when it exits, on
# failure or interrupt too.
set -euo pipefail

usage() {
	cat <<'EOF'
usage: bench/run.sh [-d DURATION] [-n ROUNDS] [-s SCENARIOS] [-o DIR] [-p] [-b REV]

  -d DURATION   measured window of echo and fanout (env DURATION, default 5s)
  -n ROUNDS     rounds of baseline+Troupe runs (env ROUNDS, default 3)
  -s LIST       comma-separated scenarios (env SCENARIOS, default all):
                fanout-10x100 fanout-10x100-batch fanout-1x2000
                fanout-1x2000-batch echo conns overload
  -o DIR        keep every run's JSON, summary and server log in DIR
                (env OUT; default: a temporary directory, removed)
  -p            write a CPU profile of Troupe's server for every run into
                the output directory, NAME.cpu.pprof (use with -o; read
                with go tool pprof -top FILE)

environment: WSLOAD_DIR (wsload's module, default ../shared/bench/wsload
next to the repository), SERVER_CPU (1), LOAD_CPU (0), PORT (19300, the
first port used; each run takes the next), MAX_OTHER (10), RETRIES (2),
HOLD (conns scenario hold, 3s), CONNS (conns scenario -n, 10000),
QUIET_WAIT (seconds to wait before a run for the machine to be idle, 60).
EOF
}

repo=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-fanout-10x100,fanout-10x100-batch,fanout-1x2000,fanout-1x2000-batch,echo,conns,overload}
OUT=${OUT:-}
PROFILE=${PROFILE:-}
BEFORE=${BEFORE:-}
WSLOAD_DIR=${WSLOAD_DIR:-$repo/../shared/bench/wsload}
SERVER_CPU=${SERVER_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PORT=${PORT:-19300}
MAX_OTHER=${MAX_OTHER:-10}
RETRIES=${RETRIES:-2}
HOLD=${HOLD:-3s}
CONNS=${CONNS:-10000}
QUIET_WAIT=${QUIET_WAIT:-60}

while getopts "d:n:s:o:pb:h" opt; do
	case $opt in
	d) DURATION=$OPTARG ;;
	n) ROUNDS=$OPTARG ;;
	s) SCENARIOS=$OPTARG ;;
	o) OUT=$OPTARG ;;
	p) PROFILE=1 ;;
	b) BEFORE=$OPTARG ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/troupe-bench.XXXXXX")
server_pid=""
load_pid=""

# cleanup stops the load generator and the server still running, if any,
# and removes the temporary directory. It runs on every exit, normal or not.
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $load_pid ]]; then
		kill -TERM "$load_pid" 2>/dev/null || true
		wait "$load_pid" 2>/dev/null || true
	fi
	if [[ -n $server_pid ]]; then
		stop_server
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

results=${OUT:-$work/results}
mkdir -p "$results"
results=$(cd "$results" && pwd) # absolute: the summary runs elsewhere

# write_summarizer writes the Go program (standard library only) that
# turns the runs' JSON lines into the tables.
write_summarizer() {
	cat >"$1" <<'GO'
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

type run struct {
	ok  bool
	raw map[string]any
	hwm float64 // peak RSS, kB
}

func load(dir, name string) run {
	var r run
	b, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil || json.Unmarshal(b, &r.raw) != nil || r.raw["error"] != nil {
		return r
	}
	r.ok = true
	if h, err := os.ReadFile(filepath.Join(dir, name+".hwm")); err == nil {
		r.hwm, _ = strconv.ParseFloat(strings.TrimSpace(string(h)), 64)
	}
	return r
}

// num reads a number at a dotted path ("cpu.client_cpu_pct").
func (r run) num(path string) float64 {
	var v any = r.raw
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return 0
		}
		v = m[k]
	}
	f, _ := v.(float64)
	return f
}

func (r run) str(key string) string { s, _ := r.raw[key].(string); return s }

func (r run) codes(key string) map[string]float64 {
	out := map[string]float64{}
	if m, ok := r.raw[key].(map[string]any); ok {
		for k, v := range m {
			out[k], _ = v.(float64)
		}
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func metric(scen string) (key, label string) {
	switch {
	case scen == "echo":
		return "msgs_per_s", "round trips/s"
	case scen == "conns":
		return "server_bytes_per_conn", "server KiB/conn"
	default:
		return "delivered_per_s", "deliveries/s"
	}
}

func fmtMetric(scen string, v float64) string {
	if scen == "conns" {
		return fmt.Sprintf("%.1f", v/1024)
	}
	return fmt.Sprintf("%.0f", v)
}

func main() {
	dir := os.Args[1]
	rounds, _ := strconv.Atoi(os.Args[2])
	scens := os.Args[3:]
	servers := []string{"baseline", "benchserver"}

	fmt.Println()
	fmt.Println("| scenario | metric | baseline (median) | Troupe (median) | Troupe/baseline (median of pairs) | pair ratios |")
	fmt.Println("|---|---|---:|---:|---:|---|")
	for _, sc := range scens {
		key, label := metric(sc)
		var vals [2][]float64
		var ratios []string
		var rs []float64
		for r := 1; r <= rounds; r++ {
			var pair [2]run
			for i, sv := range servers {
				pair[i] = load(dir, fmt.Sprintf("%s.%s.%d", sc, sv, r))
				if pair[i].ok {
					vals[i] = append(vals[i], pair[i].num(key))
				}
			}
			if pair[0].ok && pair[1].ok && pair[0].num(key) > 0 {
				x := pair[1].num(key) / pair[0].num(key)
				rs = append(rs, x)
				ratios = append(ratios, fmt.Sprintf("%.2f", x))
			} else {
				ratios = append(ratios, "n/a")
			}
		}
		fmt.Printf("| %s | %s | %s | %s | %.2f× | %s |\n", sc, label,
			fmtMetric(sc, median(vals[0])), fmtMetric(sc, median(vals[1])), median(rs), strings.Join(ratios, " "))
	}

	fmt.Println()
	fmt.Println("Per server, over all rounds: loss and order are the worst round; CPU figures are the highest (wsload, other) or the median (server); peak RSS is the server's VmHWM.")
	fmt.Println()
	fmt.Println("| scenario | server | lost | order viol. | gaps | bad | dropped (codes) | window timeouts | msgs/frame | wsload CPU % | server CPU % | other CPU % | RSS end MiB | peak RSS MiB | notes |")
	fmt.Println("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, sc := range scens {
		for _, sv := range servers {
			var lost, order, gaps, bad, wto, fpm, ccpu, scpu, ocpu, rss, hwm []float64
			drops := map[string]float64{}
			var notes []string
			ok := 0
			for r := 1; r <= rounds; r++ {
				x := load(dir, fmt.Sprintf("%s.%s.%d", sc, sv, r))
				if !x.ok {
					notes = append(notes, fmt.Sprintf("round %d failed", r))
					continue
				}
				ok++
				lost = append(lost, x.num("lost"))
				order = append(order, x.num("order_violations"))
				gaps = append(gaps, x.num("gaps"))
				bad = append(bad, x.num("bad"))
				wto = append(wto, x.num("window_timeouts"))
				if f := x.num("frames_per_msg"); f > 0 {
					fpm = append(fpm, 1/f)
				}
				ccpu = append(ccpu, x.num("cpu.client_cpu_pct"))
				scpu = append(scpu, x.num("cpu.server_cpu_pct"))
				ocpu = append(ocpu, x.num("cpu.other_cpu_pct"))
				rss = append(rss, max(x.num("server_rss_bytes"), x.num("server_rss_end_of_hold_bytes"))/(1<<20))
				hwm = append(hwm, x.hwm/1024)
				for k, v := range x.codes("drop_codes") {
					drops[k] += v
				}
				for k, v := range x.codes("closed_by_server_during_hold") {
					drops[k] += v
				}
				for k, v := range x.codes("conns_closed_by_server") {
					drops[k] += v
				}
				if sc == "conns" {
					notes = append(notes, fmt.Sprintf("r%d: %v opened, %v failed, %v alive, %.0f conns/s", r,
						x.num("opened"), x.num("failed"), x.num("alive_after_hold"), x.num("connects_per_s")))
				}
				if x.num("tail_receivers") > 0 && !boolOf(x.raw["drain_complete"]) {
					notes = append(notes, fmt.Sprintf("r%d: drain incomplete", r))
				}
				if p := x.str("subprotocol"); p != "" && ok == 1 {
					notes = append(notes, "subprotocol "+p)
				}
			}
			if ok == 0 {
				fmt.Printf("| %s | %s | | | | | | | | | | | | | %s |\n", sc, sv, strings.Join(notes, "; "))
				continue
			}
			var dk []string
			total := 0.0
			for k, v := range drops {
				dk = append(dk, fmt.Sprintf("%s×%.0f", k, v))
				total += v
			}
			sort.Strings(dk)
			dropStr := fmt.Sprintf("%.0f", total)
			if len(dk) > 0 {
				dropStr += " (" + strings.Join(dk, " ") + ")"
			}
			fpmStr := "—"
			if len(fpm) > 0 {
				fpmStr = fmt.Sprintf("%.2f", median(fpm))
			}
			fmt.Printf("| %s | %s | %.0f | %.0f | %.0f | %.0f | %s | %.0f | %s | %.0f | %.0f | %.0f | %.1f | %.1f | %s |\n",
				sc, sv, maxOf(lost), maxOf(order), maxOf(gaps), maxOf(bad), dropStr, maxOf(wto), fpmStr,
				maxOf(ccpu), median(scpu), maxOf(ocpu), median(rss), maxOf(hwm), strings.Join(notes, "; "))
		}
	}
}

func boolOf(v any) bool { b, _ := v.(bool); return b }
GO
}

echo "building wsload, benchserver and baseline into $work" >&2
[[ -d $WSLOAD_DIR ]] || { echo "wsload not found in $WSLOAD_DIR (set WSLOAD_DIR)" >&2; exit 1; }
(cd "$WSLOAD_DIR" && go build -o "$work/wsload" .)
if [[ -n $BEFORE ]]; then
	# The baseline is Troupe itself at another revision.
	echo "building the benchserver of $BEFORE as the baseline" >&2
	git -C "$repo" worktree add -q --detach "$work/before" "$BEFORE"
	(cd "$work/before" && go build -o "$work/baseline" ./examples/benchserver)
	git -C "$repo" worktree remove --force "$work/before"
	(cd "$repo" && go build -o "$work/benchserver" ./examples/benchserver)
else
	(cd "$repo" && go build -o "$work/benchserver" ./examples/benchserver && go build -o "$work/baseline" ./bench/baseline)
fi
write_summarizer "$work/summarize.go"

# scenario_args prints the wsload arguments of a scenario.
scenario_args() {
	local fan="-publishers 1 -rate 0 -window 16 -size 128 -duration $DURATION"
	case $1 in
	fanout-10x100) echo "fanout -rooms 10 -members 100 $fan" ;;
	fanout-10x100-batch) echo "fanout -rooms 10 -members 100 $fan -batch" ;;
	fanout-1x2000) echo "fanout -rooms 1 -members 2000 $fan" ;;
	fanout-1x2000-batch) echo "fanout -rooms 1 -members 2000 $fan -batch" ;;
	echo) echo "echo -conns 50 -window 8 -size 64 -duration $DURATION" ;;
	conns) echo "conns -n $CONNS -concurrency 100 -rooms 100 -hold $HOLD" ;;
	overload) echo "fanout -rooms 10 -members 100 -publishers 1 -rate 0 -window 64 -size 128 -ack self -duration $DURATION" ;;
	*) echo "unknown scenario $1" >&2; return 1 ;;
	esac
}

# start_server starts server kind $1 on port $2, pinned to SERVER_CPU, and
# waits until it accepts connections.
start_server() {
	local kind=$1 port=$2 log=$3 prof=${4:-}
	local args=(-addr "127.0.0.1:$port")
	if [[ -n $prof ]]; then
		args+=(-cpuprofile "$prof")
	fi
	taskset -c "$SERVER_CPU" "$work/$kind" "${args[@]}" >"$log" 2>&1 &
	server_pid=$!
	for _ in $(seq 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			if kill -0 "$server_pid" 2>/dev/null; then
				return 0
			fi
		fi
		if ! kill -0 "$server_pid" 2>/dev/null; then
			echo "$kind exited at start; log:" >&2
			cat "$log" >&2
			server_pid=""
			return 1
		fi
		sleep 0.05
	done
	echo "$kind did not listen on port $port" >&2
	return 1
}

# stop_server stops the running server: SIGTERM (a graceful shutdown, which
# also ends a CPU profile), then SIGKILL if it is still there after 10 s.
stop_server() {
	local pid=$server_pid
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "server $pid ignored SIGTERM; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	server_pid=""
}

next_port=$PORT

# busy_pct prints the CPU the whole machine used over one second, in % of
# one core.
busy_pct() {
	local a b
	a=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
	sleep 1
	b=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
	awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		printf "%.0f", (y[1] - x[1]) * 100 / hz
	}'
}

# wait_quiet waits, up to QUIET_WAIT seconds, for a second during which
# the machine was busier than MAX_OTHER % of a core no more: runs started on
# a busy machine would only be repeated.
wait_quiet() {
	local waited=0 busy=0
	while ((waited < QUIET_WAIT)); do
		busy=$(busy_pct)
		if ((busy <= MAX_OTHER)); then
			return 0
		fi
		waited=$((waited + 2))
		sleep 1
	done
	echo "  machine still busy (${busy}% of a core); running anyway" >&2
}

# run_one runs scenario $1 against server $2 for round $3, retrying while
# other processes were busy, and leaves NAME.json (wsload's JSON line),
# NAME.txt (its summary) and NAME.hwm (the server's peak RSS in kB).
run_one() {
	local scen=$1 kind=$2 round=$3
	local name="$scen.$kind.$round"
	local args
	args=$(scenario_args "$scen")
	local attempt=0
	while :; do
		wait_quiet
		# A fresh port per run, skipping any that something else listens on.
		local port=$next_port
		while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
			port=$((port + 1))
		done
		next_port=$((port + 1))
		local prof=""
		if [[ -n $PROFILE && $kind == benchserver ]]; then
			prof="$results/$name.cpu.pprof"
		fi
		start_server "$kind" "$port" "$results/$name.log" "$prof"
		# In the background and waited for, so that a signal is handled at
		# once (bash runs traps only between foreground commands).
		# shellcheck disable=SC2086 # args is a list of flags
		taskset -c "$LOAD_CPU" "$work/wsload" $args -url "ws://127.0.0.1:$port/ws" \
			-pid "$server_pid" -json >"$results/$name.txt" 2>&1 &
		load_pid=$!
		wait "$load_pid" || true
		load_pid=""
		awk '/^VmHWM/ {print $2}' "/proc/$server_pid/status" >"$results/$name.hwm" 2>/dev/null || true
		stop_server
		tail -n 1 "$results/$name.txt" >"$results/$name.json"
		local other
		other=$(grep -o '"other_cpu_pct":[0-9.]*' "$results/$name.json" | cut -d: -f2 || true)
		other=${other:-0}
		if awk -v o="$other" -v m="$MAX_OTHER" 'BEGIN { exit !(o > m) }' && ((attempt < RETRIES)); then
			attempt=$((attempt + 1))
			echo "  $name: other processes at ${other}%, rerun $attempt of $RETRIES" >&2
			continue
		fi
		break
	done
	echo "  $name: $(summary_line "$results/$name.json")" >&2
}

# summary_line picks the headline figure out of a JSON line for progress.
summary_line() {
	local f=$1
	local key
	for key in delivered_per_s msgs_per_s server_bytes_per_conn other_cpu_pct client_cpu_pct error; do
		grep -o "\"$key\":[^,}]*" "$f" | head -n 1 | tr '\n' ' ' || true
	done
}

IFS=, read -r -a scen_list <<<"$SCENARIOS"
for s in "${scen_list[@]}"; do scenario_args "$s" >/dev/null; done

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
	echo "go: $(go version | cut -d' ' -f3)  duration: $DURATION  rounds: $ROUNDS  server CPU $SERVER_CPU, wsload CPU $LOAD_CPU"
} | tee "$results/meta.txt" >&2

for round in $(seq "$ROUNDS"); do
	echo "round $round of $ROUNDS" >&2
	for s in "${scen_list[@]}"; do
		run_one "$s" baseline "$round"
		run_one "$s" benchserver "$round"
	done
done

(cd "$work" && go run summarize.go "$results" "$ROUNDS" "${scen_list[@]}")
