#!/bin/sh
# demo-image.sh DIR: builds berth's demo image, a static busybox with a
# user "app", as an OCI image layout in DIR using umoci. No network needed.
set -eu
out=${1:?usage: demo-image.sh DIR}
busybox=$(command -v busybox || echo /bin/busybox)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$out"
umoci init --layout "$out"
umoci new --image "$out:demo"
umoci unpack --image "$out:demo" "$work/bundle" >/dev/null
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/home/app" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cat > "$root/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<GROUP
root:x:0:
app:x:1000:
nogroup:x:65534:
GROUP
umoci repack --image "$out:demo" "$work/bundle" >/dev/null
umoci config --image "$out:demo" --config.cmd /bin/sh \
	--config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--config.workingdir / >/dev/null
umoci gc --layout "$out"
