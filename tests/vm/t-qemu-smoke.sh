# Guest kernel smoke test on the peer VMM: our guest kernel boots under KVM
# with QEMU -M microvm, its init prints the marker and the VM exits by itself.
# shellcheck shell=sh
. ./lib.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
t0=$(now_ms)
timeout 120 qemu-system-x86_64 -M microvm -enable-kvm -cpu host -smp 2 -m 256 -nodefaults -no-reboot \
    -display none -serial "file:$tmp/console" \
    -kernel "$HUSK_KERNEL" -initrd "$HUSK_SMOKE_INITRAMFS" \
    -append "console=ttyS0 reboot=t panic=-1 quiet" >"$tmp/qemu.log" 2>&1
rc=$?
t1=$(now_ms)
[ $rc -eq 124 ] && fail "QEMU microvm did not exit within 120 s"
[ $rc -eq 0 ] || { cat "$tmp/qemu.log" >&2; fail "QEMU exited $rc"; }
expect_in "$tmp/console" "HUSK-SMOKE-INIT-OK cpus=2" "guest init marker (with 2 vCPUs) missing from the console"
note "L2 smoke boot (QEMU microvm + guest kernel, launch to exit): $((t1 - t0)) ms"
