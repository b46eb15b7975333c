# Helpers for VM tests (tests/vm/t-*.sh). They run where VMs boot: inside the
# lab's L1 machine, or directly on a hardware KVM host (tests/lab/run decides).
# A test prints what it measured and exits 0 on success; `fail` ends it.
# shellcheck shell=sh
fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "    $*"; }
# now_ms: monotonic clock in milliseconds (10 ms resolution; busybox date has no %N)
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# expect_in FILE PATTERN WHAT: fail unless FILE has a line matching PATTERN
expect_in() { grep -q -- "$2" "$1" || { echo "--- $1:" >&2; tail -n 20 "$1" >&2; fail "$3"; }; }
# assert_eq GOT WANT WHAT
assert_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }
: "${HUSK_KERNEL:?HUSK_KERNEL unset: run VM tests through tests/lab/run}"
# mk_initramfs OUT: a busybox initramfs whose /init is the script read from
# stdin (busybox sh, applets on PATH via /bin/busybox --install).
mk_initramfs() {
    _d=$(mktemp -d)
    mkdir -p "$_d/bin" "$_d/dev" "$_d/proc" "$_d/sys"
    cp /bin/busybox "$_d/bin/busybox"
    mknod -m 600 "$_d/dev/console" c 5 1
    { echo '#!/bin/busybox sh'; echo '/bin/busybox --install -s /bin; export PATH=/bin'; cat; } >"$_d/init"
    chmod 755 "$_d" "$_d/init"
    (cd "$_d" && find . | busybox cpio -o -H newc 2>/dev/null) >"$1"
    rm -rf "$_d"
}
# expect_run WHAT WANT-RC WANT-STDOUT CMD...: run CMD (stdout to $out, stderr
# to $out.err), fail unless it exits WANT-RC and (when WANT-STDOUT is not
# empty) prints exactly WANT-STDOUT; notes how long it took.
# shellcheck disable=SC2154  # $out is set by the test that calls it
expect_run() {
    _what=$1 _rc=$2 _want=$3; shift 3
    _t=$(now_ms)
    timeout -s KILL "${EXPECT_RUN_TIMEOUT:-180}" "$@" >"$out" 2>"$out.err"; rc=$?
    _ms=$(( $(now_ms) - _t ))
    if [ "$rc" != "$_rc" ] || { [ -n "$_want" ] && [ "$(cat "$out")" != "$_want" ]; }; then
        [ "$rc" = 137 ] && echo "--- timed out after ${EXPECT_RUN_TIMEOUT:-180} s: $*" >&2
        echo "--- stdout of: $*" >&2; tail -n 20 "$out" >&2
        echo "--- stderr:" >&2; tail -n 20 "$out.err" >&2
        command -v on_fail >/dev/null 2>&1 && on_fail >&2
        fail "$_what: exit $rc (want $_rc), output '$(head -c 200 "$out")' (want '$_want')"
    fi
    note "$_what: ${_ms} ms"
}
# find_procs [--cmdline] PATTERN...: the running processes (this shell
# aside) whose name, /proc/PID/comm, matches one of the shell PATTERNs
# (`husk-vmm`, `containerd-shim*`), one 'PID NAME' line each, in /proc's
# order. With --cmdline the command line (arguments joined by spaces) is
# matched and printed instead of the name. Busybox has no pgrep.
find_procs() {
    _fp_cmdline=
    if [ "${1:-}" = --cmdline ]; then _fp_cmdline=1; shift; fi
    for _fp_dir in /proc/[0-9]*; do
        _fp_pid=${_fp_dir#/proc/}
        [ "$_fp_pid" = $$ ] && continue
        if [ -z "$_fp_cmdline" ]; then
            _fp_v=$(cat "$_fp_dir/comm" 2>/dev/null) || continue
        else
            _fp_v=$(tr '\0' ' ' 2>/dev/null <"$_fp_dir/cmdline") || continue
        fi
        for _fp_pat in "$@"; do
            # shellcheck disable=SC2254  # the pattern is a glob on purpose
            case $_fp_v in $_fp_pat) printf '%s %s\n' "$_fp_pid" "$_fp_v"; break ;; esac
        done
    done
}
# husk_leftovers: husk's host processes (monitors, husk-vmm, virtiofsd) still
# running, as 'NAME/PID ' words
husk_leftovers() {
    find_procs husk-vmm virtiofsd husk | while read -r _p _n; do printf '%s ' "$_n/$_p"; done
}
# wait_no_husk WHAT: fail unless husk's host processes are all gone within
# 60 s (daemons clean up asynchronously: Podman's conmon runs the runtime's
# delete after `podman run --rm` returned, and under TCG that can take seconds).
wait_no_husk() {
    _i=0
    while [ -n "$(husk_leftovers)" ] && [ $_i -lt 300 ]; do sleep 0.2; _i=$((_i + 1)); done
    _l=$(husk_leftovers); [ -z "$_l" ] || fail "$1: husk processes left after 60 s: $_l"
}
# wait_logs WHAT PATTERN CMD...: poll CMD's output (e.g. `docker logs c`) for
# up to 60 s until it has a line matching PATTERN.
wait_logs() {
    _what=$1 _pat=$2; shift 2
    _i=0
    until "$@" 2>&1 | grep -q -- "$_pat"; do
        _i=$((_i + 1)); [ $_i -lt 300 ] || fail "$_what: no '$_pat' in $* after 60 s"
        sleep 0.2
    done
}
# busybox_rootfs DIR: a container root file system: busybox and its applets.
busybox_rootfs() {
    mkdir -p "$1/bin" "$1/tmp" "$1/etc"
    cp /bin/busybox "$1/bin/busybox"
    for _a in $(/bin/busybox --list); do [ "$_a" = busybox ] || ln -sf busybox "$1/bin/$_a"; done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$1/etc/passwd"
    echo 'root:x:0:' >"$1/etc/group"
}
# no_leftovers: fail if a husk-vmm process is still running (busybox has no pgrep)
no_leftovers() {
    _left=$(find_procs husk-vmm | while read -r _p _n; do printf ' /proc/%s' "$_p"; done)
    [ -z "$_left" ] || fail "husk-vmm processes left behind:$_left"
}
# host_cgroup_has DIR MEMORY_MAX PID...: the container's host cgroup DIR
# (husk's monitor, husk-vmm, virtiofsd) holds every PID, and its memory.max
# is MEMORY_MAX.
host_cgroup_has() {
    _hc=$1 _hm=$2; shift 2
    [ -f "$_hc/cgroup.procs" ] || fail "no host cgroup $_hc"
    for _p in "$@"; do
        grep -qx "$_p" "$_hc/cgroup.procs" || fail "pid $_p ($(cat "/proc/$_p/comm" 2>/dev/null)) is not in $_hc: $(tr '\n' ' ' <"$_hc/cgroup.procs")"
    done
    assert_eq "$(cat "$_hc/memory.max")" "$_hm" "$_hc/memory.max"
}
