# Baseline of the lab's container userland, independent of husk: Docker
# (runc), Podman (crun and runc) and containerd (ctr, runc) run the local
# busybox image: echo hello, the default bridge reaches its gateway,
# --network none, and an exit status of 7 comes back. Prints how long each daemon and run took.
# shellcheck shell=sh
here=$(dirname "$0")
. "$here/lib.sh"
. "$here/daemons.sh"
[ -s "$BUSYBOX_TAR" ] || { note "SKIP: $BUSYBOX_TAR missing (not in the lab's L1 machine)"; exit 0; }
trap daemons_cleanup EXIT
out=$(mktemp)
# run WHAT WANT-RC WANT-STDOUT CMD...: run CMD, check its status and output, print its time
run() {
    _what=$1 _rc=$2 _want=$3; shift 3
    _t=$(now_ms)
    "$@" >"$out" 2>&1; rc=$?
    _ms=$(( $(now_ms) - _t ))
    if [ "$rc" != "$_rc" ] || { [ -n "$_want" ] && [ "$(cat "$out")" != "$_want" ]; }; then
        echo "--- output of: $*" >&2; tail -n 30 "$out" >&2
        fail "$_what: exit $rc (want $_rc), output '$(head -c 200 "$out")' (want '$_want')"
    fi
    note "$_what: ${_ms} ms"
}

# the container reaches its default gateway (the bridge on L1's side)
# shellcheck disable=SC2016  # expanded by the container's shell
PING_GW='gw=$(ip route | awk "/^default/ {print \$3}"); ping -c 1 -W 10 "$gw" >/dev/null && echo net-ok'

# Docker: its own containerd, runc, overlay2, default bridge.
# shellcheck disable=SC2119  # no extra dockerd arguments
start_dockerd || fail "dockerd did not start"
run "docker import busybox" 0 "" docker_import_busybox
run "docker run --rm --runtime runc busybox echo hello" 0 hello docker run --rm --runtime runc busybox echo hello
run "docker run, default bridge: ping the gateway" 0 net-ok docker run --rm busybox sh -c "$PING_GW"
run "docker run --network none, exit 7" 7 "" docker run --rm --network none busybox sh -c 'exit 7'
stop_dockerd

# Podman: cgroupfs, CNI bridge by default.
run "podman import busybox" 0 "" podman_import_busybox
run "podman --runtime crun run --rm busybox echo hello" 0 hello podman --runtime crun run --rm busybox echo hello
run "podman --runtime runc run --rm busybox echo hello" 0 hello podman --runtime runc run --rm busybox echo hello
run "podman run, CNI bridge: ping the gateway" 0 net-ok podman run --rm --cap-add NET_RAW busybox sh -c "$PING_GW"
run "podman --runtime crun --network none, exit 7" 7 "" podman --runtime crun run --rm --network none busybox sh -c 'exit 7'

# containerd + ctr (no network namespace setup: ctr gives a fresh, empty one)
# shellcheck disable=SC2119  # no extra containerd arguments
start_containerd || fail "containerd did not start"
run "ctr images import busybox (OCI archive)" 0 "" ctr_import_busybox
run "ctr run --rm busybox echo hello" 0 hello ctr run --rm "$BUSYBOX_REF" baseline-1 echo hello
run "ctr run, exit 7" 7 "" ctr run --rm "$BUSYBOX_REF" baseline-2 sh -c 'exit 7'
rm -f "$out"
