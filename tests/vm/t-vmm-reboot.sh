# A guest `reboot` (reboot=k, through the i8042) ends husk-vmm with status 0,
# and it leaves no process, socket or file behind.
# shellcheck shell=sh
. ./lib.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mk_initramfs "$tmp/init.img" <<'INIT'
mount -t proc proc /proc
echo "REBOOT-TEST cpus=$(grep -c ^processor /proc/cpuinfo)"
reboot -f
INIT
mkdir "$tmp/run"
timeout 120 husk-vmm run --initrd "$tmp/init.img" --vcpus 2 --memory 64 \
    --vsock-uds "$tmp/run/v.sock" --serial "file:$tmp/console" 2>"$tmp/err"; rc=$?
[ $rc -eq 124 ] && fail "husk-vmm did not exit within 120 s of boot"
[ $rc -eq 0 ] || { cat "$tmp/err" >&2; fail "husk-vmm exited $rc after a guest reboot"; }
expect_in "$tmp/console" "REBOOT-TEST cpus=2" "guest init did not run with 2 vCPUs"
[ -z "$(ls -A "$tmp/run")" ] || fail "left behind in the run dir: $(ls -A "$tmp/run")"
no_leftovers
note "guest reboot -> exit 0; console and run dir clean"
