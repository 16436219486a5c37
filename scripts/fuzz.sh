#!/bin/bash
# fuzz.sh: run every Go fuzz target of the module, one after another, each
# for a bounded time (make fuzz; docs/fuzzing.md).
#
# A fuzz target is any `func FuzzXxx(f *testing.F)` in a _test.go file;
# they are found anew on every run, so a new target needs no edit here.
# Each runs as
#
#   go test -run='^$' -fuzz='^FuzzXxx$' -fuzztime=$FUZZTIME ./PKG/
#
# A target that fails (a crasher, a hang, or a seed that fails) is named
# at the end and the script exits 1; go test has then written the input to
# PKG/testdata/fuzz/FuzzXxx/, to be fixed and committed as a regression
# seed. The corpus grown meanwhile stays in go's cache (go env GOCACHE).
#
# Go's fuzzing coordinator before Go 1.27 can fail a target with a bare
# "context deadline exceeded" when FUZZTIME ends while a worker is busy
# (golang/go#75804): no input is at fault and none is written. Such a run
# is reported as cut short, not failed.
#
# Environment:
#   FUZZTIME   how long each target runs (default 60s; go test's syntax:
#              30s, 2m, or 1000x for a number of inputs)
#   FUZZ       an extended regexp; only targets whose PKG/FuzzXxx matches
#              run (default: all)
#   FUZZFLAGS  more go test flags (say -parallel=2)
set -uo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-60s}
filter=${FUZZ:-}
go=${GO:-go}

# PKG FuzzXxx, one target a line, sorted.
targets=$(grep -rEo --include='*_test.go' --exclude-dir=testdata --exclude-dir=vendor --exclude-dir=.git \
	'^func Fuzz[A-Za-z0-9_]*\([A-Za-z_][A-Za-z0-9_]* \*testing\.F\)' . |
	sed -E 's|^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*|\1 \2|; s|^\./[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*|. \1|' |
	sort -u)
if [ -n "$filter" ]; then
	targets=$(printf '%s\n' "$targets" | while read -r pkg name; do
		if printf '%s/%s\n' "$pkg" "$name" | grep -Eq -- "$filter"; then echo "$pkg $name"; fi
	done)
fi
if [ -z "$targets" ]; then
	echo "fuzz: no fuzz targets found${filter:+ matching $filter}" >&2
	exit 1
fi

n=$(printf '%s\n' "$targets" | wc -l)
echo "fuzz: $n targets, $fuzztime each"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
cut=0
while read -r pkg name; do
	echo "== fuzz ./$pkg $name"
	crashers="$pkg/testdata/fuzz/$name"
	before=$(ls "$crashers" 2>/dev/null)
	# shellcheck disable=SC2086 # FUZZFLAGS holds several flags
	if $go test -run='^$' -fuzz="^$name\$" -fuzztime="$fuzztime" ${FUZZFLAGS:-} "./$pkg/" </dev/null 2>&1 | tee "$log"; then
		continue
	fi
	if [ "$(ls "$crashers" 2>/dev/null)" = "$before" ] && grep -qx '    context deadline exceeded' "$log" &&
		! grep -q -e '^panic:' -e 'Failing input written' -e '^    --- FAIL' "$log"; then
		echo "fuzz: ./$pkg $name: cut short at the deadline by Go's coordinator (golang/go#75804), no failing input"
		cut=$((cut + 1))
		continue
	fi
	failed+=("./$pkg $name")
done <<<"$targets"

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $n targets failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
if [ "$cut" -gt 0 ]; then
	echo "fuzz: all $n targets passed ($cut cut short at the deadline)"
else
	echo "fuzz: all $n targets passed"
fi
