# Faults and a short soak through the `husk` CLI, as a daemon would see them:
# - 20 run cycles leave nothing behind: no process, mount, cgroup, network
#   link, socket, state directory or open fd more than before them (the
#   long soak: `tests/lab/run -- env HUSK_SOAK_CYCLES=1000 tests/vm/run-all
#   t-faults.sh`);
# - virtiofsd killed while a container runs: the container is stopped with
#   a status within seconds, delete works, nothing is left;
# - the guest itself restarts (a container with CAP_SYS_BOOT in the VM's
#   own pid namespace calls reboot): the same.
# shellcheck shell=sh
. ./lib.sh
. ./cli-lib.sh # $tmp, $ROOT, H, $B, $R; cleaned up on exit
mkdir -p "$tmp/host-out"
busybox_rootfs "$R"

entries() { find "$1" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# leak_census: one line per kind of thing a container could leave on the host.
leak_census() {
    echo "processes: $(procs | wc -l)"
    echo "mounts: $(wc -l </proc/self/mountinfo)"
    echo "cgroups: $(find /sys/fs/cgroup -type d | wc -l)"
    echo "links: $(entries /sys/class/net)"
    echo "sockets: $(entries /run/husk-sock)"
    echo "state: $(entries "$ROOT")"
    echo "fds of this shell: $(entries /proc/$$/fd)"
}
mem_avail_kib() { awk '/^MemAvailable:/ { print $2 }' /proc/meminfo; }

# --- soak: create/start/delete cycles through `husk run` --------------------
cycles=${HUSK_SOAK_CYCLES:-20}
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
note "a guest that restarts itself: the container stopped, delete left nothing"
