# The runc-compatible `husk` CLI end to end: every container in its own
# microVM, its rootfs a virtio-fs share of the bundle (virtiofsd), driven
# exactly as a daemon drives runc: run (exit status, stdout, stdin), create
# with a pid file + start + state + kill + delete, exec (foreground and
# --detach), pause/resume, a bind mount whose writes land on the host, a VMM
# crash leaving the container stopped, a failed start leaving it stopped
# and deletable, bad bundles as one-line errors, and
# nothing left behind (state, sockets, husk-vmm, virtiofsd, monitors).
# shellcheck shell=sh
. ./lib.sh
. ./cli-lib.sh # $tmp, $ROOT, H, $B, $R; cleaned up on exit
mkdir -p "$tmp/host-out"
busybox_rootfs "$R"
# --- run: stdout, exit status, bind mount write, stdin -----------------------
# shellcheck disable=SC2016  # the container's shell expands it
spec '["sh","-c","echo hello from $(hostname); echo written-in-vm >/out/file; exit 7"]'
t0=$(now_ms)
H run --bundle "$B" r1 >"$tmp/out" 2>"$tmp/err"; rc=$?
t1=$(now_ms)
[ $rc = 7 ] || { show "$tmp/out" "$tmp/err"; fail "husk run: exit status $rc, want 7"; }
assert_eq "$(cat "$tmp/out")" "hello from huskbox" "husk run stdout"
assert_eq "$(cat "$tmp/host-out/file" 2>/dev/null)" "written-in-vm" "file written to the bind mount, read on the host"
nothing_left "after husk run"
note "husk run: stdout, exit 7, bind-mount write on the host, nothing left ($((t1 - t0)) ms)"

spec '["sh","-c","wc -c; echo eof"]'
head -c 100000 /dev/urandom >"$tmp/in"
H --debug --log "$tmp/debug.log" run --bundle "$B" r2 <"$tmp/in" >"$tmp/out" 2>"$tmp/err"; rc=$?
{ [ $rc = 0 ] && [ "$(tr -d ' ' <"$tmp/out")" = "$(printf '100000\neof')" ]; } || { show "$tmp/out" "$tmp/err"; fail "husk run stdin (rc $rc)"; }
note "husk run: 100000 bytes of stdin and EOF reach the container"
# The monitor connected to the agent on its ready signal (host vsock port
# 1025), not by polling the booting guest.
grep -q 'reached after its ready signal' "$tmp/debug.log" || { show "$tmp/debug.log"; fail "agent not reached through its ready signal"; }
note "$(sed -n 's/.*msg="\(agent [^"]*ready after [0-9]* ms\).*/\1/p' "$tmp/debug.log" | head -n 1) (ready signal)"
# No cgroupsPath: the host cgroup is the id below the parent of the
# caller's cgroup (as runc makes it); `husk run` (its own monitor) left it
# and removed it.
own=$(sed -n 's/^0:://p' /proc/self/cgroup); parent=$(dirname "$own")
grep -q "host cgroup /sys/fs/cgroup${parent%/}/r2 " "$tmp/debug.log" || { show "$tmp/debug.log"; fail "husk run: not in the host cgroup ${parent%/}/r2"; }
[ ! -e "/sys/fs/cgroup${parent%/}/r2" ] || fail "husk run left its host cgroup ${parent%/}/r2"
assert_eq "$(sed -n 's/^0:://p' /proc/self/cgroup)" "$own" "the test shell's cgroup"
note "husk run: monitor and helpers in host cgroup ${parent%/}/r2, removed at the end"

# --- create / start / state / kill / delete ---------------------------------
spec '["sh","-c","echo started; trap \"echo got-term; exit 3\" TERM; while :; do sleep 0.1; done"]'
# A systemd-style cgroupsPath (the lab has no systemd: husk makes the dirs).
sed -i 's/"linux":{/"linux":{"cgroupsPath":"husktest.slice:husk:c1",/' "$B/config.json"
cg=/sys/fs/cgroup/husktest.slice/husk-c1.scope
# With --debug and HUSK_AGENT_DEBUG=1: husk-vmm's boot phases in vmm.log and
# the agent's steps of the create and the start in console.log.
(export HUSK_AGENT_DEBUG=1; H --debug --log "$tmp/c1.log" create --bundle "$B" --pid-file "$tmp/pid" c1 >"$tmp/c1.out" 2>"$tmp/c1.err" </dev/null); rc=$?
[ $rc = 0 ] || { show "$tmp/c1.err"; fail "husk create (rc $rc)"; }
pid=$(cat "$tmp/pid")
[ -d "/proc/$pid" ] || fail "pid file names $pid, which is not running"
assert_eq "$(status_of c1)" created "state after create"
H state c1 | grep -q "\"pid\": $pid," || fail "state pid is not the pid file's $pid: $(H state c1)"
H state c1 | grep -q "\"bundle\": \"$B\"" || fail "state bundle: $(H state c1)"
[ ! -s "$tmp/c1.out" ] || fail "the process ran before start: $(cat "$tmp/c1.out")"
# The monitor, husk-vmm and virtiofsd are in the container's host cgroup;
# memory.max is the VM's RAM (the spec's 128 MiB + 64) + 128 MiB overhead.
hp=$(find_procs husk-vmm virtiofsd | cut -d' ' -f1)
{ find_procs husk-vmm | grep -q . && find_procs virtiofsd | grep -q .; } || fail "want husk-vmm and virtiofsd (QEMU's forks a sandboxed child), found: $(find_procs husk-vmm virtiofsd | tr '\n' ' ')"
# shellcheck disable=SC2086  # one pid per word
host_cgroup_has "$cg" $(((128 + 64 + 128) << 20)) "$pid" $hp
note "host cgroup $cg: monitor, husk-vmm, virtiofsd; memory.max $(cat "$cg/memory.max"), pids.max $(cat "$cg/pids.max"); memory.current $(($(cat "$cg/memory.current") >> 20)) MiB, pids.current $(cat "$cg/pids.current") after create"
H start c1 || fail "husk start"
assert_eq "$(status_of c1)" running "state after start"
for _ in $(seq 100); do grep -q started "$tmp/c1.out" && break; sleep 0.1; done
expect_in "$tmp/c1.out" started "the started container's output reaches create's stdout"
grep -q 'timing: .* first KVM_RUN' "$ROOT/c1/vmm.log" || { show "$ROOT/c1/vmm.log"; fail "--debug: no husk-vmm boot phases in vmm.log"; }
for step in 'create: rootfs mounted' 'create: container set up (rootfs, mounts)' "start: init exec'd the process"; do
    grep -q "husk-agent: container .*: $step at [0-9.]* ms" "$ROOT/c1/console.log" || { show "$ROOT/c1/console.log"; fail "HUSK_AGENT_DEBUG=1: no '$step' line on the console"; }
done
# The monitor names the share on the kernel command line (husk.share=):
# the agent has it mounted before the create asks for it.
grep -q "husk-agent: virtio-fs share husk mounted at boot in [0-9]* ms" "$ROOT/c1/console.log" || { show "$ROOT/c1/console.log"; fail "husk.share: the agent did not mount the share at boot"; }
note "--debug + HUSK_AGENT_DEBUG=1: $(grep -o 'create: container set up (rootfs, mounts) at [0-9.]* ms' "$ROOT/c1/console.log"), $(grep -o "start: init exec'd the process at [0-9.]* ms" "$ROOT/c1/console.log")"
H start c1 2>"$tmp/err" && fail "a second start succeeded"
H delete c1 2>"$tmp/err" && fail "delete of a running container succeeded without --force"
expect_in "$tmp/err" "not stopped" "delete of a running container says why"

# exec: foreground status and output, same container (pid 1 is its init)
# shellcheck disable=SC2016  # the container's shell expands it
H exec c1 sh -c 'echo in-exec $(cat /proc/1/comm); exit 5' >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 5 ] || { show "$tmp/out" "$tmp/err"; fail "husk exec: status $rc, want 5"; }
assert_eq "$(cat "$tmp/out")" "in-exec sh" "husk exec output"
H exec --detach --pid-file "$tmp/epid" c1 sh -c 'sleep 0.5; echo detached >/out/exec' || fail "exec --detach"
epid=$(cat "$tmp/epid"); [ -n "$epid" ] || fail "exec --detach wrote no pid file"
for _ in $(seq 100); do [ -d "/proc/$epid" ] || break; sleep 0.1; done
[ -d "/proc/$epid" ] && fail "the detached exec's pid $epid outlived its process"
assert_eq "$(cat "$tmp/host-out/exec" 2>/dev/null)" detached "detached exec wrote through the bind mount"
note "exec: status 5, output, --detach with a pid file that lives as long as the process"

# husk-vmm confines itself (vmm/src/confine): every thread of it (main,
# vCPUs, virtio-fs worker) has its seccomp filter, no_new_privs and no
# capabilities while the container runs.
vpids=$(find_procs husk-vmm | cut -d' ' -f1)
[ "$(echo "$vpids" | wc -w)" = 1 ] || fail "want one husk-vmm, found: $vpids"
nthreads=0
for st in /proc/"$vpids"/task/*/status; do
    # vhost-net's workers (vhost-PID, threads of husk-vmm on Linux >= 6.4) are the
    # kernel's, not husk-vmm's code.
    case $(cat "${st%/status}/comm") in vhost-[0-9]*) continue ;; esac
    nthreads=$((nthreads + 1))
    for want in 'Seccomp:	2' 'NoNewPrivs:	1' 'CapEff:	0000000000000000' 'CapPrm:	0000000000000000' 'CapBnd:	0000000000000000'; do
        grep -qx "$want" "$st" || { show "$st"; fail "husk-vmm thread $(cat "${st%/status}/comm"): no '$want' in $st"; }
    done
done
! grep -q seccomp "$ROOT/c1/vmm.log" || { show "$ROOT/c1/vmm.log"; fail "husk-vmm reported a seccomp violation"; }
note "husk-vmm confined: $nthreads threads with Seccomp 2, NoNewPrivs 1, no capabilities"

# ... and jailed (vmm/src/confine/jail.rs): every thread on one non-root uid
# and gid, a root that is not the host's (an empty tmpfs holding only the
# socket directory's path), and limits on files, file size and threads.
ids=
for st in /proc/"$vpids"/task/*/status; do
    case $(cat "${st%/status}/comm") in vhost-[0-9]*) continue ;; esac
    t=$(awk '/^Uid:/ { u = $2 " " $3 " " $4 " " $5 } /^Gid:/ { g = $2 " " $3 " " $4 " " $5 } END { print u "/" g }' "$st")
    [ -n "$ids" ] || ids=$t
    [ "$t" = "$ids" ] || { show "$st"; fail "husk-vmm thread $(cat "${st%/status}/comm"): ids $t, the main thread's $ids"; }
done
echo "$ids" | grep -Eqx '([1-9][0-9]* ){3}[1-9][0-9]*/([1-9][0-9]* ){3}[1-9][0-9]*' || { show "/proc/$vpids/status"; fail "husk-vmm's uid and gid are not one non-root id each: $ids"; }
jr=/proc/$vpids/root
[ "$(stat -L -c %d:%i "$jr")" != "$(stat -L -c %d:%i /)" ] || fail "husk-vmm's root is the host's"
jroot=$(find "$jr/" -mindepth 1 -maxdepth 1 | sed "s|^$jr/||" | tr '\n' ' ')
assert_eq "$jroot" "run " "husk-vmm's root holds only the socket directory's path"
jsock=$(find "$jr/run/husk-sock" -mindepth 2 -maxdepth 2 -type s -name vsock | sed "s|^$jr||")
[ -n "$jsock" ] || fail "husk-vmm's jail does not hold its socket directory"
lim=/proc/$vpids/limits
lims=$(sed -nE 's/^Max (open files|file size|processes) +([0-9]+) +([0-9]+) .*/\1 \2,/p' "$lim")
[ "$(echo "$lims" | wc -l)" = 3 ] || { show "$lim"; fail "husk-vmm: open files, file size and processes not all limited: $lims"; }
lims=$(echo "$lims" | tr '\n' ' ')
note "husk-vmm jailed: uid/gid $ids, its root holds '$jroot', limits: $lims"

# pause / resume
H pause c1 || fail "husk pause"
assert_eq "$(status_of c1)" paused "state after pause"
H resume c1 || fail "husk resume"
assert_eq "$(status_of c1)" running "state after resume"

# kill: SIGTERM reaches the trap, the container stops with status 3
H kill c1 TERM || fail "husk kill TERM"
wait_status c1 stopped 30
expect_in "$tmp/c1.out" got-term "SIGTERM reached the container's trap"
H state c1 | grep -q '"pid": 0,' || fail "a stopped container's pid is not 0: $(H state c1)"
[ -d "/proc/$pid" ] && fail "the monitor ($pid) outlived its container"
H kill c1 KILL 2>"$tmp/err" && fail "kill of a stopped container succeeded"
expect_in "$tmp/err" "not running" "kill of a stopped container says why"
H delete c1 || fail "husk delete of a stopped container"
[ ! -e "$cg" ] || fail "host cgroup $cg left after delete"
rmdir /sys/fs/cgroup/husktest.slice
H state c1 2>"$tmp/err" && fail "state of a deleted container succeeded"
nothing_left "after create/start/kill/delete"
note "create -> created (pid file = monitor), start -> running, pause/resume, kill TERM -> stopped, delete"

# --- delete --force of a running container; a created one is deleted too ----
spec '["sleep","1000"]'
H create --bundle "$B" c2 </dev/null >/dev/null 2>"$tmp/err" || { show "$tmp/err"; fail "create c2"; }
H start c2 || fail "start c2"
H create --bundle "$B" c3 </dev/null >/dev/null 2>"$tmp/err" || { show "$tmp/err"; fail "create c3"; }
H create --bundle "$B" c3 </dev/null 2>"$tmp/err" && fail "a second create with the same id succeeded"
expect_in "$tmp/err" "already exists" "duplicate id says so"
H list | grep -q "^c2 .*running" || fail "list: $(H list)"
H delete --force c2 || fail "delete --force of a running container"
H delete c3 || fail "delete of a created container"
nothing_left "after delete --force"
note "delete --force of a running container and delete of a created one leave nothing"

# --- the VMM dies under a running container: stopped with a status ----------
{ H create --bundle "$B" c4 </dev/null >/dev/null 2>"$tmp/err" && H start c4; } || { show "$tmp/err"; fail "create c4"; }
find_procs husk-vmm | while read -r p _; do kill -9 "$p"; done
wait_status c4 stopped 30
H delete c4 || fail "delete after a VMM crash"
nothing_left "after a VMM crash"
note "husk-vmm killed: the container is stopped, delete cleans up"

# --- a start that fails: the container is stopped, delete removes it -------
# Hide the VM's vsock socket after create: start cannot reach the agent.
{ H create --bundle "$B" c5 </dev/null >/dev/null 2>"$tmp/err" && [ "$(status_of c5)" = created ]; } || { show "$tmp/err"; fail "create c5"; }
for s in /run/husk-sock/*/vsock; do mv "$s" "$s.hidden"; done
H start c5 2>"$tmp/err" && fail "start without a reachable agent succeeded"
expect_in "$tmp/err" "start container c5: .*the container is stopped" "a failed start says the container is stopped"
assert_eq "$(status_of c5)" stopped "state after a failed start"
H delete c5 || fail "delete (without --force) after a failed start"
nothing_left "after a failed start"
note "a start that fails: $(head -c 160 "$tmp/err"); state stopped, delete leaves nothing"

# A VMM that fails while the VM boots: the error is its own last words,
# not those of virtiofsd (which follows a VMM that hangs up), and nothing is left.
printf '#!/bin/sh\nsleep 0.3; echo "husk-vmm: fake VMM gives up" >&2; exit 1\n' >"$tmp/bad-vmm"
chmod +x "$tmp/bad-vmm"
spec '["true"]'
(export HUSK_VMM="$tmp/bad-vmm"; H run --bundle "$B" v1 </dev/null >/dev/null 2>"$tmp/err"); rc=$?
[ $rc != 0 ] || fail "run with a failing VMM succeeded"
expect_in "$tmp/err" "husk-vmm (pid [0-9]*) exited while the microVM booted.*fake VMM gives up" "a failing VMM's own error"
nothing_left "after a VMM that failed during boot"
note "husk-vmm failing during boot: $(head -c 120 "$tmp/err")"

# --- bad bundles: one line, exit 1, nothing made ---------------------------
bad() { # WHAT PATTERN
    H create --bundle "$B" bad </dev/null >/dev/null 2>"$tmp/err"; rc=$?
    [ $rc = 1 ] || { show "$tmp/err"; fail "$1: exit $rc, want 1"; }
    [ "$(wc -l <"$tmp/err")" = 1 ] || { show "$tmp/err"; fail "$1: error is not one line"; }
    expect_in "$tmp/err" "$2" "$1: the error names the problem"
    nothing_left "$1"
}
rm "$B/config.json"; bad "missing config.json" "config.json"
echo '{"ociVersion": "1.0.2", "process": ' >"$B/config.json"; bad "invalid JSON" "config.json: invalid JSON"
spec '["true"]'; sed -i 's/"hostname":"huskbox"/"hostname":42/' "$B/config.json"; bad "hostname of the wrong type" "hostname"
spec '["true"]'; sed -i 's#{"type":"uts"}#{"type":"uts","path":"/proc/1/ns/uts"}#' "$B/config.json"; bad "host namespace path" "linux.namespaces\[2\].path"
spec '["true"]'; sed -i 's#"root":{"path":"rootfs"}#"root":{"path":"nonexistent"}#' "$B/config.json"; bad "missing rootfs" "root.path"
spec '["true"]' true; bad "terminal without --console-socket" "console-socket"
spec '["true"]'; sed -i 's#^{"ociVersion":"1.0.2",#{"ociVersion":"1.0.2","annotations":{"io.husk.memory_mib":"16384"},#' "$B/config.json"
bad "a VM-size annotation the host did not enable" "annotations.io.husk.memory_mib: not enabled on this host"
note "bad bundles: one-line errors naming the field, exit 1, nothing left"

# --- ids that are paths: refused in one line naming the id, nothing touched --
etc_before=$(ls -A /etc)
for id in /etc .. ../outside; do
    for cmd in start state pause kill delete; do
        H "$cmd" "$id" </dev/null >/dev/null 2>"$tmp/err" && fail "husk $cmd $id succeeded"
        [ "$(wc -l <"$tmp/err")" = 1 ] || { show "$tmp/err"; fail "husk $cmd $id: the error is not one line"; }
        grep -qF "invalid container id \"$id\"" "$tmp/err" || { show "$tmp/err"; fail "husk $cmd $id: the error does not name the id"; }
    done
done
assert_eq "$(ls -A /etc)" "$etc_before" "/etc after husk start /etc and the others"
[ ! -e "$tmp/outside" ] || fail "husk made $tmp/outside"
note "ids that are paths (/etc, .., ../outside): one-line errors naming the id, nothing made"
