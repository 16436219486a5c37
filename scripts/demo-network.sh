#!/bin/sh
# demo-network.sh [IMAGE]: publishes port 80 of a container and of a VM,
# both serving a page with busybox httpd on berth's default network, and
# fetches each through a free port of the host's loopback. Everything it
# starts is removed, also when a step fails.
set -eu
img=${1:-demo}
berth=${BERTH:-berth}
wget="$(command -v busybox || echo /bin/busybox) wget"
ids=""
trap '[ -z "$ids" ] || $berth rm -f $ids >/dev/null' EXIT
serve='mkdir -p /www && echo "served by $(hostname) on $(ip -4 -o addr show eth0 | awk "{print \$4}"), kernel $(uname -r)" > /www/index.html && exec httpd -f -p 80 -h /www'
for mode in container vm; do
	flag=""
	[ "$mode" = vm ] && flag=--vm
	id=$($berth run -d $flag -p 127.0.0.1::80 "$img" sh -c "$serve")
	ids="$ids $id"
	port=$($berth port "$id" 80)
	i=0
	until page=$($wget -qO- "http://$port/" 2>/dev/null); do
		i=$((i + 1))
		[ $i -lt 300 ] || { echo "demo-network: the $mode's published port $port did not answer" >&2; exit 1; }
		sleep 0.1
	done
	printf '%-9s -p 127.0.0.1::80 -> http://%s/: %s\n' "$mode" "$port" "$page"
done
