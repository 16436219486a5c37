#!/bin/sh
# fetch-kernel.sh DIR
#
# Fetches Debian's stock cloud kernel (the package linux-image-cloud-amd64
# depends on) with `apt-get download` and unpacks it into DIR with `dpkg -x`,
# without installing it on the host. DIR then holds boot/vmlinuz-VERSION and
# lib/modules/VERSION/. Idempotent: when DIR already holds the same kernel
# version nothing is downloaded again.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1

pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
	sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n 1)
if [ -z "$pkg" ]; then
	echo "fetch-kernel: cannot resolve linux-image-cloud-amd64 (run apt-get update?)" >&2
	exit 1
fi
version=${pkg#linux-image-}

if [ -f "$dir/boot/vmlinuz-$version" ] && [ -d "$dir/lib/modules/$version/kernel" ]; then
	echo "fetch-kernel: $pkg already in $dir"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chown _apt "$tmp" 2>/dev/null || true # apt-get download runs as _apt where it can
(cd "$tmp" && apt-get download "$pkg" >/dev/null)
deb=$(ls "$tmp"/*.deb)
mkdir -p "$dir"
dpkg -x "$deb" "$dir"
if [ ! -f "$dir/boot/vmlinuz-$version" ]; then
	echo "fetch-kernel: $deb did not contain boot/vmlinuz-$version" >&2
	exit 1
fi
# Debian's package leaves modules.dep to depmod at install time; make it
# here so modprobe/modinfo work on the tree (berth itself reads each
# module's own dependency list and does not need it).
if command -v depmod >/dev/null 2>&1; then
	depmod -b "$dir" "$version"
elif [ -x /sbin/depmod ]; then
	/sbin/depmod -b "$dir" "$version"
fi
echo "fetch-kernel: $pkg unpacked into $dir"
