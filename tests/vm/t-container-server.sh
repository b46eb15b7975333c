# The container protocol without a VM: husk-agent serves on a Unix socket
# in the lab machine (cgroup v2) and `husk-client` drives it: create /
# start / wait, stdio on separate connections (10 MiB checksum, stdin EOF),
# exec into the container's namespaces and cgroup, events (OOM, exit),
# state, stats, pause/resume, malformed requests naming the field.
# shellcheck shell=sh
. ./lib.sh
{ command -v husk-agent >/dev/null && command -v husk-client >/dev/null; } || fail "husk-agent or husk-client not on PATH"
tmp=$(mktemp -d); chmod 755 "$tmp"
S=$tmp/agent.sock
husk-agent --listen-unix "$S" 2>"$tmp/agent.log" & agent=$!
trap 'kill $agent 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do [ -S "$S" ] && break; sleep 0.05; done
[ -S "$S" ] || fail "agent did not listen"
B=$tmp/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/sys" "$B/rootfs/dev" "$B/rootfs/tmp"
cp /bin/busybox "$B/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$B/rootfs/bin/$a"; done
NORES='{}'
spec() { # ARGS_JSON; knobs: RES, NS_TYPE0
    cat >"$B/config.json" <<EOF
{"ociVersion":"1.0.2",
 "process":{"args":$1,"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0},
   "terminal":${TERMINAL:-false},"consoleSize":{"height":30,"width":100},
   "capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]},"noNewPrivileges":true},
 "root":{"path":"rootfs","readonly":true},
 "hostname":"srv",
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
   {"destination":"/tmp","type":"tmpfs","source":"tmpfs","options":["size=32m"]},
   {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["ro"]}],
 "linux":{"namespaces":[{"type":"${NS_TYPE0:-pid}"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"cgroup"}],
   "resources":${RES:-$NORES},"maskedPaths":["/proc/kcore"]}}
EOF
}
cl() { husk-client --unix "$S" --timeout 60 "$@"; }
show() { for f in out err; do echo "--- $f:" >&2; head -c 2000 "$tmp/$f" >&2; done; echo "--- agent log:" >&2; tail -n 20 "$tmp/agent.log" >&2; }
left() { # ID: no cgroup, no container-init, not known to the agent
    [ ! -e "/sys/fs/cgroup/husk/$1" ] || fail "$1: cgroup left behind"
    _p=$(find_procs --cmdline '*__container-init*' | head -n 1 | cut -d' ' -f1)
    [ -z "$_p" ] || fail "$1: container-init /proc/$_p left behind"
    cl state --id "$1" >/dev/null 2>"$tmp/st" && fail "$1: agent still knows the container"
    grep -q 'not_found' "$tmp/st" || fail "$1: state error is not not_found: $(cat "$tmp/st")"
}

# echo $$ and exit codes through the protocol
spec '["sh","-c","echo $$; hostname"]'
cl run --id s1 --bundle "$B" --no-stdin >"$tmp/out" 2>"$tmp/err"; rc=$?
{ [ $rc = 0 ] && [ "$(cat "$tmp/out")" = "$(printf '1\nsrv')" ]; } || { show; fail "echo \$\$/hostname via the protocol (rc $rc)"; }
spec '["sh","-c","exit 7"]'; cl run --id s2 --bundle "$B" --no-stdin >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 7 ] || { show; fail "exit 7 came back as $rc"; }
left s2
note "protocol: \$\$=1, hostname, exit 7 -> 7"

# a terminal: one pty stream, the container's own devpts, the spec's size
TERMINAL=true spec '["sh","-c","tty; stty size; echo hi"]'
cl run --id tty1 --bundle "$B" --no-stdin >"$tmp/out" 2>"$tmp/err"; rc=$?
{ [ $rc = 0 ] && [ "$(tr -d '\r' <"$tmp/out")" = "$(printf '/dev/pts/0\n30 100\nhi')" ]; } || { show; fail "terminal run (rc $rc)"; }
note "terminal: /dev/pts/0 of the container's devpts, 30x100"
TERMINAL=true spec '["sleep","1000"]'
{ cl create --id tty2 --bundle "$B" >/dev/null 2>"$tmp/err" && cl start --id tty2; } || { show; fail "create tty2"; }
cl exec --id tty2 --exec-id s0 --bundle "$B" --no-stdin -- stty -F /dev/console size >"$tmp/out" 2>"$tmp/err"
cl resize-pty --id tty2 40 132 >/dev/null 2>"$tmp/err" || { show; fail "resize-pty"; }
cl exec --id tty2 --exec-id s1 --bundle "$B" --no-stdin -- stty -F /dev/console size >>"$tmp/out" 2>"$tmp/err"
[ "$(tr -d '\r' <"$tmp/out")" = "$(printf '30 100\n40 132')" ] || { show; fail "resize-pty did not change the size"; }
echo '{"pids":{"limit":42},"memory":{"limit":67108864}}' >"$tmp/res.json"
cl update --id tty2 --resources "$tmp/res.json" || fail "update resources"
{ [ "$(cat /sys/fs/cgroup/husk/tty2/pids.max)" = 42 ] && [ "$(cat /sys/fs/cgroup/husk/tty2/memory.max)" = 67108864 ]; } || fail "update resources not applied"
cl delete --id tty2 --force || fail "delete tty2"
left tty2
note "resize-pty 30x100 -> 40x132 seen in the container; update-resources applied"

# 10 MiB of stdout, checksummed inside and outside, before the exit
spec '["sh","-c","head -c 10485760 /dev/urandom >/tmp/blob; sha256sum /tmp/blob >&2; cat /tmp/blob; exit 3"]'
cl run --id big --bundle "$B" --no-stdin >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 3 ] || { show; fail "10 MiB run exited $rc"; }
inside=$(grep -o '^[0-9a-f]\{64\}' "$tmp/err"); outside=$(sha256sum <"$tmp/out" | cut -d' ' -f1)
size=$(wc -c <"$tmp/out")
[ "$size" = 10485760 ] || { show; fail "got $size bytes of stdout, want 10485760"; }
assert_eq "$outside" "$inside" "sha256 of 10 MiB stdout"
note "10 MiB stdout intact (sha256 $outside) before exit 3"

# stdin reaches the process; EOF ends it
spec '["sh","-c","wc -c; echo eof-seen"]'
head -c 123457 /dev/urandom >"$tmp/in"
cl run --id in1 --bundle "$B" <"$tmp/in" >"$tmp/out" 2>"$tmp/err"; rc=$?
{ [ $rc = 0 ] && [ "$(cat "$tmp/out")" = "$(printf '123457\neof-seen')" ]; } || { show; fail "stdin relay (rc $rc)"; }
note "stdin: 123457 bytes in, EOF seen"

# CloseStdin: a piped, never attached stdin gets EOF
spec '["cat"]'
printf '{"type":"create_container","id":"cs","rootfs":{"kind":"path","path":"%s"},"stdio":{"stdin":true},"spec":%s}' "$B/rootfs" "$(cat "$B/config.json")" >"$tmp/req"
cl raw <"$tmp/req" >"$tmp/out" 2>"$tmp/err" || { show; fail "create cs"; }
cl start --id cs || fail "start cs"
sleep 1
cl state --id cs | grep -q '"status":"running"' || fail "cat ended before its stdin was closed"
cl close-stdin --id cs || fail "close-stdin"
cl wait --id cs >"$tmp/out"; rc=$?
[ $rc = 0 ] || { show; fail "cat after close-stdin exited $rc"; }
cl delete --id cs || fail "delete cs"
note "close-stdin: cat saw EOF and exited 0"

# events: OOM kill and exit 137
RES='{"memory":{"limit":33554432,"swap":33554432}}' spec '["dd","if=/dev/zero","of=/dev/null","bs=64M","count=1"]'
cl events --count 2 >"$tmp/events" 2>&1 & ev=$!
sleep 0.5
cl run --id oom1 --bundle "$B" --no-stdin >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 137 ] || { show; fail "OOM run exited $rc, want 137"; }
grep -q OOM-killed "$tmp/err" || { show; fail "wait did not report oom_killed"; }
for _ in $(seq 50); do kill -0 $ev 2>/dev/null || break; sleep 0.1; done
kill $ev 2>/dev/null
grep -q '"kind":"oom","id":"oom1"' "$tmp/events" || { cat "$tmp/events" >&2; fail "no OOM event"; }
grep -q '"kind":"exit","id":"oom1".*"status":137' "$tmp/events" || { cat "$tmp/events" >&2; fail "no exit event with status 137"; }
note "OOM: event + exit 137 (events: $(tr '\n' ' ' <"$tmp/events"))"

# exec into a running container: same pid namespace and cgroup
spec '["sleep","1000"]'
cl create --id ex --bundle "$B" >"$tmp/out" 2>"$tmp/err" || { show; fail "create ex"; }
cl start --id ex || fail "start ex"
cl state --id ex | grep -q '"status":"running"' || fail "ex not running"
cl exec --id ex --exec-id e1 --bundle "$B" --no-stdin -- sh -c 'cat /proc/1/comm; readlink /proc/1/ns/pid || ls -l /proc/1/ns/pid; readlink /proc/self/ns/pid || ls -l /proc/self/ns/pid; cat /proc/1/cgroup; cat /proc/self/cgroup' >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 0 ] || { show; fail "exec exited $rc"; }
[ "$(sed -n 1p "$tmp/out")" = sleep ] || { show; fail "exec does not see the container's init as pid 1"; }
[ "$(sed -n 2p "$tmp/out")" = "$(sed -n 3p "$tmp/out")" ] || { show; fail "exec is in another pid namespace"; }
[ "$(sed -n 4p "$tmp/out")" = "$(sed -n 5p "$tmp/out")" ] || { show; fail "exec is in another cgroup"; }
host_ns=$(readlink /proc/self/ns/pid)
[ "$(sed -n 2p "$tmp/out")" != "$host_ns" ] || fail "exec ran in the host pid namespace"
cl stats --id ex | grep -q '"pids":{"current":1' || fail "stats: pids.current of ex is not 1"
{ cl pause --id ex && cl state --id ex | grep -q '"status":"paused"'; } || fail "pause"
grep -q '^frozen 1' /sys/fs/cgroup/husk/ex/cgroup.events || fail "cgroup not frozen"
{ cl resume --id ex && cl state --id ex | grep -q '"status":"running"'; } || fail "resume"
cl delete --id ex 2>"$tmp/err" && fail "delete of a running container without --force worked"
cl kill --id ex KILL || fail "kill ex"
pidns=$(sed -n 2p "$tmp/out")
cl wait --id ex >"$tmp/out"; rc=$?
{ [ $rc = 137 ] && grep -q '"signal":9' "$tmp/out"; } || { show; fail "SIGKILL came back as $rc"; }
cl delete --id ex || fail "delete ex"
left ex
note "exec: same pid ns ($pidns) and cgroup; pause/resume; SIGKILL -> 137"

# malformed requests: one line naming the field, nothing left behind
raw_bad() { # FIELD ID WHAT  (request JSON in $tmp/req)
    cl raw <"$tmp/req" >"$tmp/out" 2>"$tmp/err"; rc=$?
    [ $rc = 1 ] || { show; fail "$3: raw request exit $rc"; }
    grep -q -- "$1" "$tmp/out" || { show; fail "$3: error does not name $1"; }
    left "$2"
}
spec '["true"]'
req() { printf '{"type":"create_container","id":"%s","rootfs":{"kind":"path","path":"%s"},"spec":%s}' "$1" "$2" "$(cat "$B/config.json")" >"$tmp/req"; }
NS_TYPE0=bogus spec '["true"]'; req m1 "$B/rootfs"; raw_bad 'spec.linux.namespaces\[0\].type' m1 "bad namespace type"
RES='{"pids":{"limit":-4}}' spec '["true"]'; req m2 "$B/rootfs"; raw_bad 'linux.resources.pids.limit' m2 "negative limit"
spec '["true"]'; req m3 "relative/rootfs"; raw_bad 'rootfs.path' m3 "relative rootfs path"
sed -i 's/"type":"tmpfs"/"type":"nosuchfs"/' "$B/config.json"; req m4 "$B/rootfs"; raw_bad 'mounts\[1\].type' m4 "unknown mount type"
note "malformed: namespace type, negative limit, relative rootfs, unknown mount type rejected by field"
kill -0 $agent || fail "agent died"
