# Containers without a VM: `husk-agent container run` (runc-like, foreground)
# on busybox bundles, in the lab machine (cgroup v2). Covers pid/uts
# namespaces, exit codes and signal deaths, memory and pids limits,
# read-only rootfs, masked paths, capabilities, seccomp, user, rlimits,
# user namespaces, and malformed specs that must leave nothing behind.
# shellcheck shell=sh
. ./lib.sh
command -v husk-agent >/dev/null || fail "husk-agent not on PATH"
[ -f /sys/fs/cgroup/cgroup.controllers ] || fail "no cgroup v2 at /sys/fs/cgroup"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # the user-namespace test maps root to an unprivileged host uid
B=$tmp/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/sys" "$B/rootfs/dev" "$B/rootfs/tmp" "$B/rootfs/etc"
cp /bin/busybox "$B/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$B/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' >"$B/rootfs/etc/passwd"
echo 'root:x:0:' >"$B/rootfs/etc/group"

DEFCAPS='["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD","CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"]'
DEFUSER='{"uid":0,"gid":0}'
NORES='{}'
# spec ARGS_JSON: writes $B/config.json. Knobs (environment): CAPS, RO, RES,
# SECCOMP, USER, RLIMITS, NS_EXTRA, LINUX_EXTRA, MOUNTS_EXTRA, ROOT, CWD, NNP.
spec() {
    cat >"$B/config.json" <<EOF
{"ociVersion":"1.0.2",
 "process":{"args":$1,"cwd":"${CWD:-/}","env":["PATH=/bin","HOME=/"],
   "user":${USER_JSON:-$DEFUSER},
   "capabilities":{"bounding":${CAPS:-$DEFCAPS},"effective":${CAPS:-$DEFCAPS},"permitted":${CAPS:-$DEFCAPS}},
   "rlimits":${RLIMITS:-[]},"noNewPrivileges":${NNP:-true}},
 "root":{"path":"${ROOT:-rootfs}","readonly":${RO:-false}},
 "hostname":"husk-test",
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
   {"destination":"/tmp","type":"tmpfs","source":"tmpfs","options":["nosuid","nodev","size=64m"]},
   {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},
   {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["nosuid","noexec","nodev","ro"]}
   ${MOUNTS_EXTRA:-}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"},{"type":"cgroup"}${NS_EXTRA:-}],
   "resources":${RES:-$NORES},
   "seccomp":${SECCOMP:-null},
   "maskedPaths":["/proc/kcore","/proc/keys","/proc/timer_list","/sys/firmware"],
   "readonlyPaths":["/proc/sys","/proc/sysrq-trigger","/proc/bus"]
   ${LINUX_EXTRA:-}}}
EOF
}
# crun ID: runs the bundle; stdout in $tmp/out, stderr in $tmp/err, status in $rc
crun() { husk-agent container run --bundle "$B" --id "$1" >"$tmp/out" 2>"$tmp/err"; rc=$?; }
out() { cat "$tmp/out"; }
show() { echo "--- stdout:" >&2; cat "$tmp/out" >&2; echo "--- stderr:" >&2; cat "$tmp/err" >&2; }
want_rc() { [ "$rc" = "$1" ] || { show; fail "$2: exit status $rc, want $1"; }; }
want_out() { [ "$(out)" = "$1" ] || { show; fail "$2: stdout '$(out)', want '$1'"; }; }
# nothing_left ID: no cgroup, no container-init process, no mount of the bundle
nothing_left() {
    [ ! -e "/sys/fs/cgroup/husk/$1" ] || fail "$1: cgroup /sys/fs/cgroup/husk/$1 left behind"
    _p=$(find_procs --cmdline '*__container-init*' | head -n 1 | cut -d' ' -f1)
    [ -z "$_p" ] || fail "$1: container-init process /proc/$_p left behind"
    grep -q "$B" /proc/self/mountinfo && fail "$1: mount of $B left behind"
    return 0
}

# 1. pid namespace, hostname, exit codes
spec '["sh","-c","echo $$"]'; crun c-pid; want_rc 0 "echo \$\$"; want_out 1 "echo \$\$ (pid namespace)"
spec '["hostname"]'; crun c-host; want_rc 0 hostname; want_out husk-test "hostname"
spec '["sh","-c","exit 7"]'; crun c-exit; want_rc 7 "exit 7"
nothing_left c-exit
note "pid ns: \$\$=1; hostname=husk-test; exit 7 -> 7"

# 2. SIGKILL from outside -> 137 (signal death)
spec '["sleep","100"]'
husk-agent container run --bundle "$B" --id c-kill >"$tmp/out" 2>"$tmp/err" & runner=$!
pid=
for _ in $(seq 200); do
    # shellcheck disable=SC2013  # one pid per line
    for p in $(cat /sys/fs/cgroup/husk/c-kill/cgroup.procs 2>/dev/null); do
        [ "$(cat "/proc/$p/comm" 2>/dev/null)" = sleep ] && pid=$p
    done
    [ -n "$pid" ] && break; sleep 0.1
done
[ -n "$pid" ] || { show; fail "container c-kill never appeared in its cgroup"; }
kill -9 "$pid"; wait "$runner"; rc=$?
want_rc 137 "SIGKILL of the container's init"
nothing_left c-kill
note "SIGKILL of init -> 137"

# 3. memory.max 32 MiB, allocate 64 MiB -> OOM kill, 137
RES='{"memory":{"limit":33554432,"swap":33554432}}' spec '["dd","if=/dev/zero","of=/dev/null","bs=64M","count=1"]'
crun c-oom; want_rc 137 "64 MiB allocation under memory.max 32 MiB"
grep -q "killed by the OOM killer" "$tmp/err" || { show; fail "OOM kill not reported"; }
nothing_left c-oom
note "memory.max 32 MiB + 64 MiB dd -> OOM kill reported, exit 137"

# 4. pids.max 10 + fork bomb: the container stays up at its limit, then dies on SIGKILL
RES='{"pids":{"limit":10}}' spec '["sh","-c","bomb() { bomb | bomb & }; bomb; exec sleep 1000"]'
husk-agent container run --bundle "$B" --id c-bomb >"$tmp/out" 2>"$tmp/err" & runner=$!
sleep 5
cg=/sys/fs/cgroup/husk/c-bomb
[ -d "$cg" ] || { show; fail "fork bomb container is gone"; }
cur=$(cat $cg/pids.current); max=$(cat $cg/pids.max); hits=$(awk '$1=="max"{print $2}' $cg/pids.events)
[ "$max" = 10 ] || fail "pids.max is $max, want 10"
[ "$cur" -le 10 ] || fail "pids.current $cur above pids.max 10"
[ "$hits" -gt 0 ] || fail "fork bomb never hit pids.max (pids.events max=$hits)"
init=$(head -n1 $cg/cgroup.procs)
kill -0 "$runner" 2>/dev/null || { show; fail "runner exited under the fork bomb"; }
kill -9 "$init"; wait "$runner"; rc=$?
want_rc 137 "SIGKILL of the fork bomb's init"
nothing_left c-bomb
note "fork bomb: pids.current=$cur <= 10, pids.max hit $hits times, container killed cleanly"

# 5. read-only rootfs, masked paths, read-only paths
RO=true spec '["sh","-c","touch /newfile 2>&1; echo tmp >/tmp/ok && cat /tmp/ok; wc -c </proc/kcore; ls /sys/firmware | wc -l; { echo 1 >/proc/sys/kernel/domainname; } 2>&1; true"]'
crun c-ro; want_rc 0 "read-only rootfs"
grep -q "Read-only file system" "$tmp/out" || { show; fail "write to the read-only rootfs did not fail with EROFS"; }
[ "$(sed -n 2p "$tmp/out")" = tmp ] || { show; fail "tmpfs /tmp not writable"; }
[ "$(sed -n 3p "$tmp/out")" = 0 ] || { show; fail "masked /proc/kcore is not empty"; }
[ "$(sed -n 4p "$tmp/out")" = 0 ] || { show; fail "masked /sys/firmware is not empty"; }
[ "$(sed -n 5p "$tmp/out" | grep -c 'Read-only file system')" = 1 ] || { show; fail "read-only /proc/sys was writable"; }
note "rootfs ro (EROFS), /proc/kcore and /sys/firmware masked, /proc/sys read-only"

# 6. capabilities: CAP_NET_ADMIN dropped -> ip link fails; granted -> works
spec '["sh","-c","ip link set lo up && echo UP"]'; crun c-nocap
grep -q UP "$tmp/out" && { show; fail "ip link set lo up worked without CAP_NET_ADMIN"; }
grep -q "Operation not permitted" "$tmp/err" || { show; fail "ip link without CAP_NET_ADMIN: no EPERM"; }
CAPS='["CAP_NET_ADMIN"]' spec '["sh","-c","ip link set lo up && echo UP"]'; crun c-cap
want_rc 0 "ip link with CAP_NET_ADMIN"; want_out UP "ip link with CAP_NET_ADMIN"
note "without CAP_NET_ADMIN: EPERM; with it: lo up"

# 7. seccomp: mkdir -> EPERM; other calls allowed; nothing denied without the rule
SECCOMP='{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}' \
    spec '["sh","-c","mkdir /tmp/d; echo still-running"]'
crun c-sec; want_rc 0 "seccomp container"
grep -q "Operation not permitted" "$tmp/err" || { show; fail "mkdir under the seccomp rule did not fail with EPERM"; }
want_out still-running "seccomp container"
spec '["sh","-c","mkdir /tmp/d && echo made"]'; crun c-nosec; want_out made "mkdir without seccomp"
NNP=false SECCOMP='{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}' \
    spec '["sh","-c","mkdir /tmp/d && echo made"]'; crun c-sec2; want_out made "seccomp without no_new_privileges"
note "seccomp ERRNO(EPERM) on mkdir: EPERM; filter also loads without noNewPrivileges"

# 8. user, groups, umask, rlimits, cwd, env
USER_JSON='{"uid":1000,"gid":1000,"additionalGids":[10,20],"umask":23}' \
RLIMITS='[{"type":"RLIMIT_NOFILE","soft":100,"hard":200}]' CWD=/tmp/work \
    spec '["sh","-c","id -u; id -g; id -G; umask; ulimit -n; pwd; cat /proc/self/status | grep CapEff"]'
crun c-user; want_rc 0 "user settings"
want_out "$(printf '1000\n1000\n1000 10 20\n0027\n100\n/tmp/work\nCapEff:\t0000000000000000')" "uid/gid/groups/umask/rlimit/cwd/caps"
note "uid 1000, gids 1000+10,20, umask 0027, nofile 100, cwd created"

# 9. user namespace with id maps
NS_EXTRA=',{"type":"user"}' LINUX_EXTRA=',"uidMappings":[{"containerID":0,"hostID":100000,"size":65536}],"gidMappings":[{"containerID":0,"hostID":100000,"size":65536}]' \
    spec '["sh","-c","id -u; cat /proc/self/uid_map | tr -s \" \""]'
crun c-userns; want_rc 0 "user namespace"
want_out "$(printf '0\n 0 100000 65536')" "user namespace id map"
note "user namespace: uid 0 inside = 100000 outside"

# 10. malformed specs: one line naming the field, exit 125, nothing left behind
bad() { # FIELD WHAT
    crun "c-bad"; want_rc 125 "$2"
    grep -q -- "$1" "$tmp/err" || { show; fail "$2: error does not name $1"; }
    [ "$(wc -l <"$tmp/err")" = 1 ] || { show; fail "$2: error is not one line"; }
    nothing_left c-bad
}
spec '["true"]'; sed -i 's/{"type":"uts"}/{"type":"bogus"}/' "$B/config.json"
bad 'linux.namespaces\[2\].type' "bad namespace type"
RES='{"memory":{"limit":-5}}' spec '["true"]'; bad 'linux.resources.memory.limit' "negative memory limit"
RES='{"pids":{"limit":-3}}' spec '["true"]'; bad 'linux.resources.pids.limit' "negative pids limit"
MOUNTS_EXTRA=',{"destination":"/x","type":"nosuchfs","source":"x"}' spec '["true"]'; bad 'mounts\[4\].type' "unknown mount type"
ROOT=no/such/rootfs spec '["true"]'; bad 'root.path' "missing rootfs"
CWD=relative spec '["true"]'; bad 'process.cwd' "relative cwd"
# A failure inside container-init (after the cgroup exists) cleans up too.
MOUNTS_EXTRA=',{"destination":"/x","type":"bind","source":"/no/such/dir","options":["rbind"]}' spec '["true"]'
bad 'mounts\[4\].source' "missing bind source"
spec '["/bin/no-such-program"]'; crun c-noexec; want_rc 125 "missing program"
grep -q 'process.args\[0\]' "$tmp/err" || { show; fail "missing program: error does not name process.args[0]"; }
nothing_left c-noexec
note "malformed specs: errors name the field; no cgroup, process or mount left"
