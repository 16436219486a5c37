#!/bin/bash
# A/B of two trees: builds berth at OLD and at NEW (git revisions; NEW
# defaults to the work tree), then alternates `berth run --rm demo true`
# (start) and `berth exec` into a detached instance (exec) between the two
# builds, each with its own data root, and prints the medians and their
# ratio (new/old). Needs root and the demo image at /tmp/berth-demo-oci
# (`make demo` makes it).
#
#   scripts/ab.sh OLD [NEW] [RUNS]
set -euo pipefail
old=${1:?usage: scripts/ab.sh OLD [NEW] [RUNS]}
new=${2:-}
runs=${3:-40}
top=$(git rev-parse --show-toplevel)
work=$(mktemp -d /tmp/berth-ab.XXXXXX)
cleanup() {
	for s in old new; do
		[ -x "$work/$s/berth" ] && "$work/$s/berth" --root "$work/root-$s" rm -f ab >/dev/null 2>&1 || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
build() { # build SIDE REV
	local src=$work/src-$1
	mkdir -p "$src" "$work/$1"
	if [ -n "$2" ]; then
		git -C "$top" archive "$2" | tar -x -C "$src"
	else
		src=$top
	fi
	local cmds="./cmd/berth ./cmd/berth-init"
	[ -d "$src/cmd/berth-registry" ] && cmds="$cmds ./cmd/berth-registry" # since the registry client left berth
	(cd "$src" && go build -o "$work/$1/" $cmds)
	"$work/$1/berth" --root "$work/root-$1" image import /tmp/berth-demo-oci --name demo >/dev/null
	"$work/$1/berth" --root "$work/root-$1" run -d --name ab demo sleep 100000 >/dev/null
}
build old "$old"
build new "$new"
ms() { # ms CMD... : wall time of CMD in milliseconds
	local t0 t1
	t0=$(date +%s%N)
	"$@" >/dev/null
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000))
}
for s in old new; do : >"$work/start-$s"; : >"$work/exec-$s"; done
for _ in $(seq "$runs"); do
	for s in old new; do
		b="$work/$s/berth --root $work/root-$s"
		ms $b run --rm demo true >>"$work/start-$s"
		ms $b exec ab true >>"$work/exec-$s"
	done
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1000}'; }
for what in start exec; do
	o=$(median "$work/$what-old")
	n=$(median "$work/$what-new")
	echo "$what: old $o ms, new $n ms, new/old $(awk -v o="$o" -v n="$n" 'BEGIN {printf "%.2f", n/o}') (median of $runs each, alternating)"
done
