# End to end: husk-vmm boots the agent, the rootfs is a read-only virtio-blk
# ext4 image of busybox, and `husk-client` drives containers over
# vsock: $$=1, hostname, exit 7, SIGKILL -> 137, 10 MiB stdout intact
# before the exit, stdin + EOF, OOM event + 137, pids.max fork bomb with the
# guest still answering, exec in the same pid namespace and cgroup,
# seccomp EPERM, a malformed spec named by field.
# shellcheck shell=sh
. ./lib.sh
tmp=$(mktemp -d)
B=$tmp/bundle; R=$tmp/rootfs
mkdir -p "$B" "$R/bin" "$R/proc" "$R/sys/fs/cgroup" "$R/dev" "$R/tmp"  # mount points: the rootfs is read-only
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
mkfs.ext4 -q -F -d "$R" "$tmp/rootfs.img" 32M >/dev/null || fail "mkfs.ext4 of the busybox rootfs failed"
V=$tmp/v.sock
husk-vmm run --vsock-uds "$V" --disk "$tmp/rootfs.img,ro" --memory 512 --serial "file:$tmp/console" 2>"$tmp/vmm.err" & vmm=$!
trap 'kill $vmm 2>/dev/null; rm -rf "$tmp"' EXIT
NORES='{}'
spec() { # ARGS_JSON; knobs: RES, SECCOMP
    cat >"$B/config.json" <<EOF
{"ociVersion":"1.0.2",
 "process":{"args":$1,"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0},
   "capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]},"noNewPrivileges":true},
 "root":{"path":"unused","readonly":true},
 "hostname":"vmbox",
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
   {"destination":"/tmp","type":"tmpfs","source":"tmpfs","options":["size=32m"]},
   {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["ro"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"},{"type":"cgroup"}],
   "resources":${RES:-$NORES},"seccomp":${SECCOMP:-null},"maskedPaths":["/proc/kcore"]}}
EOF
}
cl() { husk-client --vsock-uds "$V" --timeout 120 "$@"; }
crun() { cl run --id "$1" --bundle "$B" --rootfs-blk /dev/vda --ro --no-stdin >"$tmp/out" 2>"$tmp/err"; rc=$?; }
show() { for f in out err vmm.err; do echo "--- $f:" >&2; head -c 1500 "$tmp/$f" >&2; done; echo "--- console:" >&2; tail -n 15 "$tmp/console" >&2; }

cl ping >"$tmp/out" 2>"$tmp/err" || { show; fail "agent did not answer over vsock"; }
note "agent up: $(cat "$tmp/out")"

spec '["sh","-c","echo $$; hostname"]'; crun v1
{ [ $rc = 0 ] && [ "$(cat "$tmp/out")" = "$(printf '1\nvmbox')" ]; } || { show; fail "echo \$\$/hostname in the VM (rc $rc)"; }
spec '["sh","-c","exit 7"]'; crun v2; [ $rc = 7 ] || { show; fail "exit 7 came back as $rc"; }
spec '["sh","-c","touch /x"]'; crun v3
{ [ $rc = 1 ] && grep -q 'Read-only file system' "$tmp/err"; } || { show; fail "write to the read-only rootfs (rc $rc)"; }
note "VM: \$\$=1, hostname vmbox, exit 7 -> 7, rootfs EROFS"

spec '["sh","-c","head -c 10485760 /dev/urandom >/tmp/blob; sha256sum /tmp/blob >&2; cat /tmp/blob"]'; crun big
inside=$(grep -o '^[0-9a-f]\{64\}' "$tmp/err"); outside=$(sha256sum <"$tmp/out" | cut -d' ' -f1)
{ [ $rc = 0 ] && [ "$(wc -c <"$tmp/out")" = 10485760 ]; } || { show; fail "10 MiB over vsock: rc $rc, $(wc -c <"$tmp/out") bytes"; }
assert_eq "$outside" "$inside" "sha256 of 10 MiB stdout over vsock"
note "10 MiB stdout over vsock intact before the exit"

spec '["sh","-c","wc -c; echo eof-seen"]'; head -c 54321 /dev/urandom >"$tmp/in"
cl run --id in1 --bundle "$B" --rootfs-blk /dev/vda --ro <"$tmp/in" >"$tmp/out" 2>"$tmp/err"; rc=$?
{ [ $rc = 0 ] && [ "$(cat "$tmp/out")" = "$(printf '54321\neof-seen')" ]; } || { show; fail "stdin over vsock (rc $rc)"; }
note "stdin over vsock: 54321 bytes, EOF seen"

RES='{"memory":{"limit":33554432,"swap":33554432}}' spec '["dd","if=/dev/zero","of=/dev/null","bs=64M","count=1"]'
cl events --count 2 >"$tmp/events" 2>&1 & ev=$!
sleep 1
crun oom; [ $rc = 137 ] || { show; fail "OOM in the VM exited $rc, want 137"; }
for _ in $(seq 100); do kill -0 $ev 2>/dev/null || break; sleep 0.1; done; kill $ev 2>/dev/null
{ grep -q '"kind":"oom","id":"oom"' "$tmp/events" && grep -q '"kind":"exit","id":"oom".*"status":137' "$tmp/events"; } \
    || { cat "$tmp/events" >&2; fail "OOM/exit events missing"; }
note "VM OOM: event + exit 137"

RES='{"pids":{"limit":10}}' spec '["sh","-c","bomb() { bomb | bomb & }; bomb; exec sleep 1000"]'
cl create --id bomb --bundle "$B" --rootfs-blk /dev/vda --ro >/dev/null 2>"$tmp/err" || { show; fail "create bomb"; }
cl start --id bomb || fail "start bomb"
sleep 5
cl stats --id bomb >"$tmp/out" || fail "stats of the fork bomb"
cur=$(grep -o '"pids":{"current":[0-9]*' "$tmp/out" | grep -o '[0-9]*$')
{ [ -n "$cur" ] && [ "$cur" -le 10 ]; } || fail "fork bomb: pids.current '$cur' not <= 10: $(cat "$tmp/out")"
cl ping >/dev/null || fail "guest stopped answering under the fork bomb"
cl state --id bomb | grep -q '"status":"running"' || fail "fork bomb container died"
note "fork bomb: pids.current=$cur <= 10, container running, agent answers"

# exec into the running bomb container's sibling: a plain one
spec '["sleep","1000"]'
{ cl create --id ex --bundle "$B" --rootfs-blk /dev/vda --ro >/dev/null 2>"$tmp/err" && cl start --id ex; } || { show; fail "create ex"; }
cl exec --id ex --exec-id e1 --bundle "$B" --no-stdin -- sh -c 'cat /proc/1/comm; readlink /proc/1/ns/pid; readlink /proc/self/ns/pid; cat /proc/1/cgroup; cat /proc/self/cgroup' >"$tmp/out" 2>"$tmp/err"; rc=$?
{ [ $rc = 0 ] && [ "$(sed -n 1p "$tmp/out")" = sleep ] && [ "$(sed -n 2p "$tmp/out")" = "$(sed -n 3p "$tmp/out")" ] \
    && [ "$(sed -n 4p "$tmp/out")" = "$(sed -n 5p "$tmp/out")" ]; } || { show; fail "exec: not in the container's pid ns/cgroup"; }
note "exec in the VM: same pid ns $(sed -n 2p "$tmp/out") and cgroup"
cl kill --id ex KILL; cl wait --id ex >"$tmp/out"; rc=$?
[ $rc = 137 ] || { show; fail "SIGKILL came back as $rc"; }
cl delete --id ex || fail "delete ex"
cl delete --id bomb --force || fail "delete bomb"
note "SIGKILL -> 137; containers removed"

SECCOMP='{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}' \
    spec '["sh","-c","mkdir /tmp/d"]'; crun sec
{ [ $rc = 1 ] && grep -q 'Operation not permitted' "$tmp/err"; } || { show; fail "seccomp EPERM in the VM (rc $rc)"; }
RES='{"memory":{"limit":-5}}' spec '["true"]'; crun bad
{ [ $rc = 125 ] && grep -q 'linux.resources.memory.limit' "$tmp/err"; } || { show; fail "negative limit in the VM (rc $rc)"; }
cl state --id bad 2>&1 | grep -q not_found || fail "malformed container left behind"
note "VM seccomp EPERM; malformed spec named by field, nothing left"

cl shutdown || fail "shutdown"
for _ in $(seq 300); do kill -0 $vmm 2>/dev/null || break; sleep 0.1; done
kill -0 $vmm 2>/dev/null && fail "husk-vmm still running after shutdown"
wait $vmm; rc=$?
[ $rc = 0 ] || { show; fail "husk-vmm exited $rc"; }
no_leftovers
