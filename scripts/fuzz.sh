#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: FUZZ_SECONDS (default 30) in
# all, split evenly between the targets. A failing input is written to the
# target's testdata/fuzz directory by `go test` and the script exits non-zero.
#
#   scripts/fuzz.sh            # 30 s in all
#   FUZZ_SECONDS=300 scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# package:target pairs; `go test -fuzz` takes one target per run.
targets=(
	"./typed/:FuzzDecodeDispatch"
	".:FuzzFrames"
)

total=${FUZZ_SECONDS:-30}
if ! [[ $total =~ ^[0-9]+$ ]] || ((total < ${#targets[@]})); then
	echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, at least ${#targets[@]}" >&2
	exit 2
fi
each=$((total / ${#targets[@]}))

for t in "${targets[@]}"; do
	pkg=${t%%:*}
	name=${t#*:}
	echo "fuzz.sh: $name in $pkg for ${each}s"
	# -fuzzminimizetime bounds how long the engine spends shrinking each
	# new input: FuzzFrames does a network round trip per execution, and
	# the default (60 s per input) would use up the whole budget.
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "${each}s" -fuzzminimizetime 5s "$pkg"
done
