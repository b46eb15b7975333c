# Shared by the VM tests that drive the `husk` CLI on a bundle of their
# own, sourced after lib.sh: sets $tmp (scratch dir, removed on exit with
# every container left under $ROOT), $ROOT (husk's --root), H (husk with
# that --root), $B (bundle dir) and $R (its rootfs), and defines spec,
# procs, nothing_left, show, status_of, pid_of, wait_status, run_bg,
# wait_rc, wait_no_procs and leak_census.
# shellcheck shell=sh
tmp=$(mktemp -d)
ROOT=$tmp/state
H() { husk --root "$ROOT" "$@"; }
cleanup() {
    for id in $(H list -q 2>/dev/null); do H delete --force "$id" >/dev/null 2>&1; done
    rm -rf "$tmp"
}
trap cleanup EXIT
B=$tmp/bundle
# R is for the tests that source this file.
# shellcheck disable=SC2034
R=$B/rootfs
# spec ARGS_JSON [TERMINAL]: a config.json shaped like Docker's (runc's
# default mounts, every namespace, a bind mount of $tmp/host-out at /out).
spec() {
    cat >"$B/config.json" <<EOF
{"ociVersion":"1.0.2",
 "process":{"terminal":${2:-false},"args":$1,"cwd":"/","env":["PATH=/bin","HOME=/"],"user":{"uid":0,"gid":0},
   "capabilities":{"bounding":["CAP_KILL","CAP_CHOWN"],"effective":["CAP_KILL","CAP_CHOWN"],"permitted":["CAP_KILL","CAP_CHOWN"]},
   "rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}],"noNewPrivileges":true},
 "root":{"path":"rootfs"},
 "hostname":"huskbox",
 "mounts":[{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]},
   {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
   {"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620"]},
   {"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},
   {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},
   {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["ro","nosuid","noexec","nodev"]},
   {"destination":"/out","type":"bind","source":"$tmp/host-out","options":["rbind","rw"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"},{"type":"cgroup"}],
   "resources":{"memory":{"limit":134217728}},
   "maskedPaths":["/proc/kcore"],"readonlyPaths":["/proc/sys"]}}
EOF
}
procs() { # names of husk's host processes still running
    find_procs husk-vmm virtiofsd husk | while read -r _p _n; do echo "$_n /proc/$_p"; done
}
nothing_left() { # WHAT
    _p=$(procs)
    # shellcheck disable=SC2086,SC2116  # echo joins the lines of $_p into one
    [ -z "$_p" ] || fail "$1: processes left: $(echo $_p)"
    [ -z "$(ls -A "$ROOT" 2>/dev/null)" ] || fail "$1: state left under --root: $(ls -A "$ROOT")"
    [ -z "$(ls -A /run/husk-sock 2>/dev/null)" ] || fail "$1: sockets left in /run/husk-sock: $(ls -A /run/husk-sock)"
}
show() { for f in "$@"; do echo "--- $f:" >&2; tail -c 1500 "$f" >&2; done; }
status_of() { H state "$1" 2>/dev/null | sed -n 's/.*"status": "\([a-z]*\)".*/\1/p'; }
pid_of() { H state "$1" 2>/dev/null | sed -n 's/.*"pid": \([0-9]*\).*/\1/p'; }
wait_status() { # ID STATUS SECONDS
    _n=$(($3 * 10))
    while [ $_n -gt 0 ]; do [ "$(status_of "$1")" = "$2" ] && return 0; sleep 0.1; _n=$((_n - 1)); done
    fail "$1 did not become $2 within $3 s (state: $(H state "$1" 2>&1 | tr -d '\n'))"
}

# run_bg ID: `husk run --keep` of $B as container ID in the background, as
# a daemon waiting on it; stdout, stderr, exit status in $tmp/ID.{out,err,rc}.
run_bg() {
    rm -f "$tmp/$1.rc"
    (H run --keep --bundle "$B" "$1" </dev/null >"$tmp/$1.out" 2>"$tmp/$1.err"; echo $? >"$tmp/$1.rc") &
}
# wait_rc ID SECONDS: waits for run_bg's `husk run` to end; sets $rc.
wait_rc() {
    _n=$(($2 * 10))
    until [ -s "$tmp/$1.rc" ]; do
        _n=$((_n - 1)); [ $_n -gt 0 ] || { show "$tmp/$1.err"; fail "husk run $1 still running after $2 s"; }
        sleep 0.1
    done
    # shellcheck disable=SC2034  # for the caller
    rc=$(cat "$tmp/$1.rc")
}
# wait_no_procs SECONDS WHAT: fail unless husk's host processes are all gone
# within SECONDS, by themselves.
wait_no_procs() {
    _n=$(($1 * 10))
    while [ -n "$(procs)" ]; do
        _n=$((_n - 1)); [ $_n -gt 0 ] || fail "$2: processes left after $1 s: $(procs | tr '\n' ' ')"
        sleep 0.1
    done
}
_entries() { find "$1" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# leak_census: one line per kind of thing a container could leave on the host.
leak_census() {
    echo "processes: $(procs | wc -l)"
    echo "mounts: $(wc -l </proc/self/mountinfo)"
    echo "cgroups: $(find /sys/fs/cgroup -type d | wc -l)"
    echo "links: $(_entries /sys/class/net)"
    echo "sockets: $(_entries /run/husk-sock)"
    echo "state: $(_entries "$ROOT")"
    echo "fds of this shell: $(_entries /proc/$$/fd)"
}
