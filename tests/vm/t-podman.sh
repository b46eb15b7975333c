# Podman runs containers in husk microVMs: `podman --runtime $(which husk)`
# with the local busybox image: echo hello, exit 7, stdin (-i), a TTY (-t),
# podman exec, stop / kill, rm -f of a running container, a bind mount
# written from the guest, --network none and the default (CNI bridge)
# network. After each: no husk-vmm, virtiofsd or monitor left.
# shellcheck shell=sh
# shellcheck disable=SC2086  # $P is a command prefix ("podman --runtime PATH"), split into words on purpose
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/daemons.sh"
[ -s "$BUSYBOX_TAR" ] || fail "$BUSYBOX_TAR missing: run through tests/lab/run (the lab's L1 has the image)"
command -v podman >/dev/null || fail "podman not installed (the lab's L1 has it)"
HUSK=$(command -v husk) || fail "husk not on PATH"
tmp=$(mktemp -d); out=$tmp/out
P="podman --runtime $HUSK"
trap '$P rm -af -t 0 >/dev/null 2>&1; daemons_cleanup; rm -rf "$tmp"' EXIT
podman_import_busybox >/dev/null || fail "podman import of busybox failed"
clean() { wait_no_husk "$1"; }

expect_run "podman --runtime husk run --rm busybox echo hello" 0 hello $P run --rm busybox echo hello
clean "after echo hello"
expect_run "exit 7" 7 "" $P run --rm --network none busybox sh -c 'exit 7'
echo hi >"$tmp/in"
expect_run "stdin: echo hi | podman run -i ... cat" 0 hi sh -c "$P run --rm -i --network none busybox cat <'$tmp/in'"
expect_run "a TTY: podman run -t" 0 "" $P run --rm -t --network none busybox sh -c 'tty; echo tty-ok'
{ grep -q '^/dev/pts/[0-9]' "$out" && grep -q 'tty-ok' "$out"; } || fail "podman run -t: no pty in the container: $(cat "$out")"
mkdir -p "$tmp/host"
expect_run "bind mount: -v HOST:/data, written in the VM" 0 "" $P run --rm --network none -v "$tmp/host:/data" busybox sh -c 'echo from-vm >/data/f'
assert_eq "$(cat "$tmp/host/f" 2>/dev/null)" from-vm "file written to a bind mount, read on the host"
expect_run "--network none: no ethernet device" 0 no-eth $P run --rm --network none busybox sh -c 'ls /sys/class/net | grep -q eth || echo no-eth'
clean "after run/-i/-t/-v/--network none"

expect_run "podman run -d" 0 "" $P run -d --network none --name p1 busybox sleep 1000
expect_run "podman exec" 3 exec-ok $P exec p1 sh -c 'echo exec-ok; exit 3'
expect_run "podman stop -t 2" 0 p1 $P stop -t 2 p1
expect_run "exit code after stop" 0 137 $P inspect -f '{{.State.ExitCode}}' p1
expect_run "podman rm" 0 "" $P rm p1
clean "after podman stop + rm"

expect_run "podman run -d (for kill)" 0 "" $P run -d --network none --name p2 busybox sh -c 'trap "exit 9" TERM; echo trap-set; while :; do sleep 0.1; done'
# A TERM before the trap is set would be ignored by the container's pid 1.
wait_logs "podman logs p2" trap-set $P logs p2
expect_run "podman kill -s TERM reaches the trap" 0 "" $P kill -s TERM p2
expect_run "podman wait" 0 9 $P wait p2
expect_run "podman rm" 0 "" $P rm p2

expect_run "podman run -d (for rm -f)" 0 "" $P run -d --network none --name p3 busybox sleep 1000
expect_run "podman rm -f of a running container" 0 "" $P rm -f -t 0 p3
clean "after podman rm -f"

expect_run "default network: runs, eth0 in the VM" 0 ok $P run --rm busybox sh -c 'ls /sys/class/net | grep -q eth0 && echo ok'
clean "after the default network"
