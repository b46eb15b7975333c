# Faults and a short soak through the `husk` CLI, as a daemon would see them:
# - 15 run cycles leave nothing behind: no process, mount, cgroup, network
#   link, socket, state directory or open fd more than before them (the
#   long soak: `tests/lab/run -- env HUSK_SOAK_CYCLES=1000 tests/vm/run-all
#   t-faults.sh`);
# - virtiofsd killed while a container runs: the container is stopped with
#   a status within seconds, delete works, nothing is left;
# - the guest itself restarts (a container with CAP_SYS_BOOT in the VM's
#   own pid namespace calls reboot): the same;
# - husk-vmm killed (-9), the guest kernel panicking (a guest root sets
#   vm.panic_on_oom=2 and fills its memory cgroup) and the agent killed (a
#   guest root with CAP_SYS_PTRACE zeroes the code of PID 1 through
#   /proc/1/mem: it faults, and the guest kernel panics as init dies):
#   a waiting `husk run` exits 255 at once saying why, `husk state` says
#   stopped, delete works and the leak census is as before;
# - the monitor killed (-9): husk-vmm and virtiofsd follow it within
#   seconds, `husk state` says stopped, delete works, the census as before;
# - a full state file system (--root on a full tmpfs): create fails with a
#   one-line error and leaves nothing.
# shellcheck shell=sh
. ./lib.sh
. ./cli-lib.sh # $tmp, $ROOT, H, $B, $R; cleaned up on exit
mkdir -p "$tmp/host-out"
busybox_rootfs "$R"

# census_same WHAT: fail unless the leak census is what it was before the soak.
census_same() {
    leak_census >"$tmp/now"
    diff "$tmp/before" "$tmp/now" >"$tmp/census.diff" || { cat "$tmp/census.diff" >&2; fail "$1: something was left behind (< before, > after)"; }
}
mem_avail_kib() { awk '/^MemAvailable:/ { print $2 }' /proc/meminfo; }

# --- soak: create/start/delete cycles through `husk run` --------------------
cycles=${HUSK_SOAK_CYCLES:-15}
spec '["sh","-c","echo cycle"]'
H run --bundle "$B" warm </dev/null >"$tmp/out" 2>"$tmp/err" || { show "$tmp/err"; fail "husk run (warm-up)"; }
leak_census >"$tmp/before"; m0=$(mem_avail_kib); t0=$(now_ms)
i=1
while [ $i -le "$cycles" ]; do
    H run --bundle "$B" "soak$i" </dev/null >"$tmp/out" 2>"$tmp/err"; rc=$?
    { [ $rc = 0 ] && [ "$(cat "$tmp/out")" = cycle ]; } || { show "$tmp/out" "$tmp/err"; fail "soak cycle $i: exit $rc"; }
    i=$((i + 1))
done
t1=$(now_ms); leak_census >"$tmp/after"; m1=$(mem_avail_kib)
diff "$tmp/before" "$tmp/after" >"$tmp/census.diff" || { cat "$tmp/census.diff" >&2; fail "$cycles husk run cycles left something behind (< before, > after)"; }
nothing_left "after the soak"
note "soak: $cycles husk run cycles in $(( (t1 - t0) / cycles )) ms each; nothing left ($(tr '\n' ';' <"$tmp/after")); MemAvailable $((m0 / 1024)) -> $((m1 / 1024)) MiB"

# --- virtiofsd killed while the container runs ------------------------------
spec '["sleep","600"]'
{ H create --bundle "$B" f1 </dev/null >/dev/null 2>"$tmp/err" && H start f1 2>>"$tmp/err"; } || { show "$tmp/err"; fail "create/start f1"; }
wait_status f1 running 30
vfs=$(find_procs virtiofsd | cut -d' ' -f1)
[ -n "$vfs" ] || fail "no virtiofsd for f1"
# shellcheck disable=SC2086  # one pid per word
kill -9 $vfs
wait_status f1 stopped 30
H delete f1 2>"$tmp/err" || { show "$tmp/err"; fail "delete after virtiofsd was killed"; }
nothing_left "after virtiofsd was killed"
census_same "after virtiofsd was killed"
note "virtiofsd killed: the container stopped, delete left nothing"

# --- the guest restarts itself ----------------------------------------------
# No pid namespace: the container's shell is in the guest's own, where
# reboot(2) with CAP_SYS_BOOT restarts the VM (husk-vmm exits on the reset).
spec '["sh","-c","sleep 1; reboot -f; sleep 600"]'
sed -i 's/{"type":"pid"},//; s/"CAP_KILL","CAP_CHOWN"/"CAP_KILL","CAP_CHOWN","CAP_SYS_BOOT"/g' "$B/config.json"
{ H create --bundle "$B" g1 </dev/null >/dev/null 2>"$tmp/err" && H start g1 2>>"$tmp/err"; } || { show "$tmp/err"; fail "create/start g1"; }
wait_status g1 stopped 60
H delete g1 2>"$tmp/err" || { show "$tmp/err"; fail "delete after the guest restarted"; }
nothing_left "after the guest restarted"
census_same "after the guest restarted"
note "a guest that restarts itself: the container stopped, delete left nothing"

# crashed ID WHAT: the `husk run` of ID (run_bg) ended with 255 within 30 s
# saying why, `husk state` says stopped, delete works and leaves nothing.
crashed() {
    wait_rc "$1" 30
    ms=$(($(now_ms) - t0))
    [ "$rc" = 255 ] || { show "$tmp/$1.out" "$tmp/$1.err" "$ROOT/$1/console.log"; fail "$2: husk run exited $rc, want 255"; }
    expect_in "$tmp/$1.err" "the microVM stopped unexpectedly" "$2: husk run did not say why"
    assert_eq "$(status_of "$1")" stopped "$2: husk state"
    H delete "$1" 2>"$tmp/err" || { show "$tmp/err"; fail "$2: husk delete"; }
    nothing_left "$2"
    census_same "$2"
}

# --- husk-vmm killed under a waiting `husk run` --------------------------------
spec '["sleep","600"]'
run_bg v1
wait_status v1 running 60
t0=$(now_ms)
# shellcheck disable=SC2046  # one pid per word
kill -9 $(find_procs husk-vmm | cut -d' ' -f1)
crashed v1 "husk-vmm killed"
note "husk-vmm killed: husk run exited 255 after $ms ms, delete left nothing"

# --- the monitor killed --------------------------------------------------------
# The pid a daemon waits on: `husk state`'s pid (and --pid-file's).
{ H create --bundle "$B" m1 </dev/null >/dev/null 2>"$tmp/err" && H start m1 2>>"$tmp/err"; } || { show "$tmp/err"; fail "create/start m1"; }
wait_status m1 running 30
mon=$(pid_of m1)
{ [ -n "$mon" ] && [ "$mon" -gt 1 ]; } || fail "husk state m1 names no monitor pid: $(H state m1 2>&1)"
t0=$(now_ms)
kill -9 "$mon"
wait_status m1 stopped 5
ms=$(($(now_ms) - t0))
wait_no_procs 10 "the monitor killed"
t1=$(now_ms)
H delete m1 2>"$tmp/err" || { show "$tmp/err"; fail "delete after the monitor was killed"; }
nothing_left "after the monitor was killed"
census_same "after the monitor was killed"
note "monitor killed: husk state said stopped after $ms ms, husk-vmm and virtiofsd were gone by themselves after $((t1 - t0)) ms, delete left nothing"

# --- a guest root makes the guest kernel panic ---------------------------------
# guest_root CAPS: the container is root of the guest: in the guest's pid
# namespace, with the capabilities CAPS (quoted, comma-led) and /proc/sys
# writable.
guest_root() {
    sed -i -e 's/{"type":"pid"},//' -e "s/\"CAP_KILL\",\"CAP_CHOWN\"/\"CAP_KILL\",\"CAP_CHOWN\"$1/g" \
        -e 's|"readonlyPaths":\["/proc/sys"\]|"readonlyPaths":[]|' "$B/config.json"
}
# Each script waits for the host's go (a file in /out): the container is
# running by then, as a daemon would have seen it.
cat >"$R/panic.sh" <<'EOF'
until [ -e /out/go ]; do sleep 0.1; done
echo 2 >/proc/sys/vm/panic_on_oom || exit 3
# With panic_on_oom=2 a memory cgroup's OOM panics the kernel: fill the
# /dev/shm tmpfs, charged to the container's 32 MiB.
head -c 60m /dev/zero >/dev/shm/fill
sleep 600
EOF
spec '["sh","/panic.sh"]'
guest_root ""
sed -i 's/"limit":134217728/"limit":33554432/' "$B/config.json"
rm -f "$tmp/host-out/go"
run_bg p1
wait_status p1 running 60
t0=$(now_ms)
touch "$tmp/host-out/go"
crashed p1 "guest kernel panic"
note "guest kernel panic: husk run exited 255 after $ms ms, delete left nothing"

# --- a guest root kills the agent ----------------------------------------------
# The agent is the guest's PID 1: signals from its own pid namespace do not
# reach it, but a root with CAP_SYS_PTRACE can write its memory. With its
# code zeroed it faults as soon as it runs (at the latest to reap this
# script); the guest kernel panics as init dies.
cat >"$R/kill-agent.sh" <<'EOF'
until [ -e /out/go ]; do sleep 0.1; done
for m in $(awk '$2 ~ /x/ && $6 !~ /^\[/ { print $1 }' /proc/1/maps); do
    s=$((0x${m%-*})) e=$((0x${m#*-}))
    dd if=/dev/zero of=/proc/1/mem bs=4096 seek=$((s / 4096)) count=$(((e - s) / 4096)) conv=notrunc || exit 3
done
echo agent code zeroed
EOF
spec '["sh","/kill-agent.sh"]'
guest_root ',"CAP_SYS_PTRACE"'
rm -f "$tmp/host-out/go"
run_bg a1
wait_status a1 running 60
t0=$(now_ms)
touch "$tmp/host-out/go"
crashed a1 "agent killed"
note "agent killed: husk run exited 255 after $ms ms, delete left nothing"
rm -f "$tmp/host-out/go" "$R/panic.sh" "$R/kill-agent.sh"

# --- a full state file system ----------------------------------------------------
# --root on a tmpfs with no room left, then with one page left: create
# fails with one line saying so and leaves nothing under the root.
spec '["sleep","600"]'
full=$tmp/full
mkdir -p "$full"
mount -t tmpfs -o size=64k tmpfs "$full" || fail "mount a tmpfs for the full state root"
mkdir "$full/state"
dd if=/dev/zero of="$full/fill" bs=4096 2>/dev/null
for room in 0 1; do
    [ "$room" = 0 ] || { rm -f "$full/fill"; dd if=/dev/zero of="$full/fill" bs=4096 count=$((64 / 4 - 1)) 2>/dev/null; }
    husk --root "$full/state" create --bundle "$B" s1 </dev/null >"$tmp/out" 2>"$tmp/err"; rc=$?
    [ "$rc" != 0 ] || fail "create on a full --root ($room pages left) succeeded"
    [ "$(wc -l <"$tmp/err")" = 1 ] || { show "$tmp/err"; fail "create on a full --root ($room pages left): want a one-line error"; }
    expect_in "$tmp/err" "No space left on device" "create on a full --root ($room pages left): the error does not say the disk is full"
    [ -z "$(ls -A "$full/state")" ] || fail "create on a full --root ($room pages left) left: $(ls -A "$full/state")"
    wait_no_procs 10 "create on a full --root"
    note "full --root ($room pages left): $(cat "$tmp/err")"
done
umount "$full"
census_same "after create on a full state file system"
