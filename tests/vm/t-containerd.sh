# containerd runs containers in husk microVMs through the shim v2
# (containerd-shim-husk-v2, runtime io.containerd.husk.v2) with ctr and the
# local busybox image: echo hi, exit 7, stdin, a TTY (ctr run -t under
# script), then one detached task: ctr task exec (output and exit status),
# ctr task ps, pause/resume, ctr task metrics, kill -s TERM seen by ctr task
# rm; containerd restarted under a running task (it reconnects to the shim:
# exec, kill, wait, rm); and a shim killed under a running task
# (containerd's cleanup runs the shim's `delete`, which stops the VM). At the end: no husk-vmm, virtiofsd or shim process, no shim state, no
# rootfs mount left.
# shellcheck shell=sh
# shellcheck disable=SC2086  # $R is a command prefix ("ctr run --runtime ..."), split into words on purpose
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/daemons.sh"
[ -s "$BUSYBOX_OCI" ] || fail "$BUSYBOX_OCI missing: run through tests/lab/run (the lab's L1 has the image)"
command -v containerd >/dev/null || fail "containerd not installed (the lab's L1 has it)"
command -v containerd-shim-husk-v2 >/dev/null || fail "containerd-shim-husk-v2 not on PATH"
command -v script >/dev/null || fail "script (util-linux) not installed"
tmp=$(mktemp -d); out=$tmp/out
RT=io.containerd.husk.v2
R="ctr run --runtime $RT"
cleanup() {
    for _c in c5 c6 c7; do ctr task rm -f "$_c" >/dev/null 2>&1; ctr container rm "$_c" >/dev/null 2>&1; done
    daemons_cleanup; rm -rf "$tmp"
}
trap cleanup EXIT
on_fail() { # what the shim, husk and containerd logged
    find /run/husk-shim -name husk.log -o -name console.log 2>/dev/null | while IFS= read -r f; do
        echo "--- $f:"; tail -n 15 "$f"
    done
    echo "--- husk processes: $(husk_leftovers)"
    tail -n 30 "$DAEMONS_DIR/containerd.log"
}
# shellcheck disable=SC2119  # no extra containerd arguments
start_containerd || fail "containerd did not start"
ctr_import_busybox || fail "ctr import of busybox failed"
# shim_leftovers: shim processes (the server, or a monitor: same binary)
shim_leftovers() { find_procs 'containerd-shim*' | while read -r _p _n; do printf '%s ' "$_n/$_p"; done; }
clean() { # WHAT: nothing of husk's or the shim's is left
    _i=0
    while [ -n "$(husk_leftovers)$(shim_leftovers)" ] && [ $_i -lt 300 ]; do sleep 0.2; _i=$((_i + 1)); done
    _l="$(husk_leftovers)$(shim_leftovers)"; [ -z "$_l" ] || { on_fail >&2; fail "$1: processes left after 60 s: $_l"; }
    _s=$(find /run/husk-shim -mindepth 2 2>/dev/null)
    [ -z "$_s" ] || fail "$1: shim state left: $_s"
    _m=$(grep -c " /run/husk-containerd/state/io.containerd.runtime.v2.task/" /proc/mounts)
    [ "$_m" = 0 ] || fail "$1: $_m rootfs mounts left: $(grep /run/husk-containerd /proc/mounts)"
}

# stopped_with ID STATUS WHAT: task ID is STOPPED within 60 s (after WHAT)
# and `ctr task rm` reports STATUS. ctr task rm warns of a non-zero exit
# status ("exit with non-zero exit code 9") and exits 0; some ctr versions
# exit with the status instead.
stopped_with() {
    _i=0
    until ctr task ls 2>/dev/null | grep -q "^$1 .*STOPPED"; do
        _i=$((_i + 1)); [ $_i -lt 300 ] || { on_fail >&2; fail "$1 not STOPPED 60 s after $3: $(ctr task ls 2>&1)"; }
        sleep 0.2
    done
    timeout -s KILL 60 ctr task rm "$1" >"$out" 2>"$out.err"; _rc=$?
    { [ "$_rc" = "$2" ] || { [ "$_rc" = 0 ] && grep -q "exit code $2" "$out.err"; }; } \
        || fail "ctr task rm $1: exit status $2 after $3 not seen (exit $_rc): $(cat "$out.err")"
}

expect_run "ctr run --runtime $RT --rm busybox echo hi" 0 hi $R --rm "$BUSYBOX_REF" c1 echo hi </dev/null
expect_run "exit 7" 7 "" $R --rm "$BUSYBOX_REF" c2 sh -c 'exit 7' </dev/null
echo through-stdin >"$tmp/in"
expect_run "stdin: ctr run ... cat <file" 0 through-stdin $R --rm "$BUSYBOX_REF" c3 cat <"$tmp/in"
expect_run "a TTY: ctr run -t under script" 0 "" script -qec "$R -t --rm $BUSYBOX_REF c4 sh -c 'tty; echo tty-ok'" /dev/null </dev/null
{ grep -q '/dev/pts/[0-9]' "$out" && grep -q 'tty-ok' "$out"; } || fail "ctr run -t: no pty in the container: $(cat "$out")"
clean "after run/stdin/-t"

# One detached task for the rest: its shell exits 9 on TERM, once the trap is set.
expect_run "ctr run -d" 0 "" $R -d --null-io "$BUSYBOX_REF" c5 sh -c 'trap "exit 9" TERM; touch /tmp/trap-set; while :; do sleep 0.1; done'
expect_run "ctr task exec: output and exit status" 3 exec-ok ctr task exec --exec-id e1 c5 sh -c 'echo exec-ok; exit 3' </dev/null
wait_logs "the trap is set" ready sh -c "ctr task exec --exec-id e2 c5 sh -c 'test -f /tmp/trap-set && echo ready' </dev/null"
expect_run "ctr task ps" 0 "" ctr task ps c5
[ "$(grep -c '^ *[0-9]' "$out")" -ge 1 ] || fail "ctr task ps c5: no pid: $(cat "$out")"
expect_run "ctr task pause" 0 "" ctr task pause c5
expect_run "ctr task ls: paused" 0 "" ctr task ls
grep -q '^c5 .*PAUSED' "$out" || fail "c5 not PAUSED: $(cat "$out")"
expect_run "ctr task resume" 0 "" ctr task resume c5
expect_run "exec after resume" 0 resumed ctr task exec --exec-id e3 c5 echo resumed </dev/null
expect_run "ctr task metrics" 0 "" ctr task metrics c5
{ grep -q 'memory.usage' "$out" && grep -q 'pids.current' "$out"; } || fail "ctr task metrics: no cgroup v2 metrics: $(cat "$out")"
expect_run "ctr task kill -s TERM" 0 "" ctr task kill -s TERM c5
stopped_with c5 9 "SIGTERM (the trap's exit 9)"
expect_run "ctr container rm" 0 "" ctr container rm c5
clean "after the detached task"

# containerd restarted under a running task: the shim (its own session) and
# the VM go on; the new containerd finds the task from the shim's address
# file and reconnects, and the task can be killed, waited and removed.
expect_run "ctr run -d (for a containerd restart)" 0 "" $R -d --null-io "$BUSYBOX_REF" c7 sleep 1000
vm_before=$(find_procs husk-vmm | cut -d' ' -f1)
stop_containerd
# shellcheck disable=SC2119  # no extra containerd arguments
start_containerd || fail "containerd did not start again"
assert_eq "$(find_procs husk-vmm | cut -d' ' -f1)" "$vm_before" "the VM across a containerd restart"
expect_run "ctr task ls after the restart" 0 "" ctr task ls
grep -q '^c7 .*RUNNING' "$out" || { on_fail >&2; fail "c7 not RUNNING after containerd restarted: $(cat "$out")"; }
expect_run "ctr task exec after the restart" 0 reconnected ctr task exec --exec-id r1 c7 echo reconnected </dev/null
expect_run "ctr task kill -s KILL after the restart" 0 "" ctr task kill -s KILL c7
stopped_with c7 137 SIGKILL
expect_run "ctr container rm" 0 "" ctr container rm c7
clean "after a containerd restart"

# The shim server killed under a running task: containerd sees it gone and
# runs `containerd-shim-husk-v2 ... delete`, which kills the container and
# removes its state; the monitor and the VM go with it.
expect_run "ctr run -d (for a shim crash)" 0 "" $R -d --null-io "$BUSYBOX_REF" c6 sleep 1000
shim=$(find_procs --cmdline '*containerd-shim-husk-v2 -namespace default -id c6 *' | cut -d' ' -f1)
[ -n "$shim" ] || fail "no shim server process for c6: $(find_procs --cmdline '*containerd-shim*')"
kill -KILL $shim
_i=0
while ctr task ls 2>/dev/null | grep -q '^c6 '; do
    _i=$((_i + 1)); [ $_i -lt 300 ] || { on_fail >&2; fail "task c6 still listed 60 s after its shim was killed: $(ctr task ls 2>&1)"; }
    sleep 0.2
done
expect_run "ctr container rm after the shim crash" 0 "" ctr container rm c6
clean "after a shim crash"
