#!/bin/sh
# demo-compose.sh [IMAGE]: brings up a small compose project: "web", two
# container replicas behind one published port on a free loopback port,
# and "stock", a service running as a VM, which web's replicas reach by
# name. It queries web through the port, then takes the project down,
# also when a step fails.
set -eu
img=${1:-demo}
berth=${BERTH:-berth}
wget="$(command -v busybox || echo /bin/busybox) wget"
dir=$(mktemp -d /tmp/berth-demo-compose.XXXXXX)
mkdir "$dir/shop"
file=$dir/shop/compose.yaml
# web's page is a CGI script that asks the VM for its own page.
cat > "$dir/shop/q" <<'CGI'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "web replica $(hostname) asked stock: $(wget -qO- http://stock/)"
CGI
chmod 755 "$dir/shop/q"
cat > "$file" <<COMPOSE
services:
  web:
    image: $img
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && cp /q /www/cgi-bin/q && exec httpd -f -p 80 -h /www"]
    volumes: ["./q:/q:ro"]
    ports: ["127.0.0.1::80"]
    deploy:
      replicas: 2
    depends_on: [stock]
  stock:
    image: $img
    runtime: berth-vm
    command: ["sh", "-c", "mkdir -p /www && echo \"a VM, kernel \$\$(uname -r)\" > /www/index.html && exec httpd -f -p 80 -h /www"]
COMPOSE
trap '$berth down -f "$file" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
$berth up -d -f "$file"
addr=$($berth port --project shop web 80)
echo "web is published on $addr, balanced over its replicas:"
for i in 1 2 3 4; do
	n=0
	until page=$($wget -qO- "http://$addr/cgi-bin/q" 2>/dev/null) && [ -n "$page" ]; do
		n=$((n + 1))
		[ $n -lt 300 ] || { echo "demo-compose: http://$addr/cgi-bin/q did not answer" >&2; exit 1; }
		sleep 0.1
	done
	echo "  $page"
done
$berth down -f "$file"
