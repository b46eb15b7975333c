# virtio-blk: the guest reads a file from a read-only host ext4 image and its
# checksum matches; it writes to a read-write image and the write is on the
# host after the VM exits; a write to the read-only disk fails in the guest.
# shellcheck shell=sh
. ./lib.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
dd if=/dev/urandom of="$tmp/src/data.bin" bs=1024 count=3000 2>/dev/null
want=$(sha256sum "$tmp/src/data.bin" | cut -d' ' -f1)
mkfs.ext4 -q -F -d "$tmp/src" "$tmp/ro.img" 16M >/dev/null || fail "mkfs.ext4 (ro image) failed"
mkfs.ext4 -q -F "$tmp/rw.img" 16M >/dev/null || fail "mkfs.ext4 (rw image) failed"
mk_initramfs "$tmp/init.img" <<'INIT'
mount -t proc proc /proc; mount -t devtmpfs dev /dev
mkdir -p /ro /rw
mount -t ext4 -o ro /dev/vda /ro && echo "BLK-SHA $(sha256sum /ro/data.bin)"
dd if=/dev/zero of=/dev/vda bs=512 count=1 seek=100 conv=fsync 2>/dev/null && echo BLK-RO-WRITE-OK || echo BLK-RO-WRITE-REFUSED
mount -t ext4 /dev/vdb /rw && echo "written by the guest" >/rw/guest.txt && umount /rw && echo BLK-RW-DONE
sync
reboot -f
INIT
timeout 180 husk-vmm run --initrd "$tmp/init.img" --memory 128 \
    --disk "$tmp/ro.img,ro" --disk "$tmp/rw.img" --serial "file:$tmp/console" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] || { cat "$tmp/err" >&2; tail -n 20 "$tmp/console" >&2; fail "husk-vmm exited $rc"; }
got=$(grep -o 'BLK-SHA [0-9a-f]*' "$tmp/console" | cut -d' ' -f2)
assert_eq "$got" "$want" "sha256 of data.bin read by the guest"
expect_in "$tmp/console" BLK-RO-WRITE-REFUSED "a write to the read-only disk was not refused"
expect_in "$tmp/console" BLK-RW-DONE "guest did not finish writing the rw disk"
host=$(debugfs -R 'cat /guest.txt' "$tmp/rw.img" 2>/dev/null)
assert_eq "$host" "written by the guest" "file the guest wrote, read on the host"
note "3000 KiB read with matching sha256; ro write refused; rw write visible on the host"
no_leftovers
