#!/usr/bin/env bash
# Runs every fuzz target for a bounded number of executions. Each target has
# its own count, sized to about 15 s on a two-core machine; FUZZ_SCALE
# (default 1) multiplies them all for a longer run. A failing input is
# written to the target's testdata/fuzz directory by `go test` and the
# script exits non-zero.
#
#   scripts/fuzz.sh               # about 30 s in all
#   FUZZ_SCALE=20 scripts/fuzz.sh # about 10 minutes
#
# The limits are counts (-fuzztime Nx), not durations: with a duration, Go's
# fuzz coordinator before 1.27 can report its own deadline as a failure,
# "context deadline exceeded", with no failing input (go.dev/issue/75804).
# A count never arms that deadline; -timeout still bounds a stuck run.
set -euo pipefail
cd "$(dirname "$0")/.."

# package:target:executions; `go test -fuzz` takes one target per run.
# FuzzFrames does a loopback round trip per execution, hence its lower count.
targets=(
	"./typed/:FuzzDecodeFast:300000"
	"./internal/router/:FuzzDecodeDispatch:150000"
	".:FuzzFrames:25000"
)

scale=${FUZZ_SCALE:-1}
if ! [[ $scale =~ ^[1-9][0-9]*$ ]]; then
	echo "fuzz.sh: FUZZ_SCALE must be a positive whole number" >&2
	exit 2
fi

for t in "${targets[@]}"; do
	IFS=: read -r pkg name execs <<<"$t"
	n=$((execs * scale))
	echo "fuzz.sh: $name in $pkg for $n executions"
	# -fuzzminimizetime bounds how much the engine spends shrinking each new
	# input: the default (60 s per input) would dwarf the run.
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "${n}x" -fuzzminimizetime 500x \
		-timeout $((10 * scale))m "$pkg"
done
