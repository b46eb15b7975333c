# OCI runtime-spec points where husk must act as runc does, in one microVM
# (create, start, kill, delete of one container):
# - a spec without a mount namespace runs;
# - linux.rootfsPropagation "unbindable" is taken and is the root's;
# - linux.resources.cpu.cpus "1" gets a VM with a second vCPU (or, on a
#   one-CPU host, "0-1" is refused in one line naming the field);
# - uid 10 with CAP_DAC_OVERRIDE (effective and ambient, as the issue and
#   runc need: a non-root exec keeps only ambient capabilities) creates a
#   file in a root-owned directory
#   of the rootfs (virtio-fs) and the host sees it owned by uid 10;
# - husk update refuses a cpuset beyond the VM's vCPUs in one line;
# - poststart hooks run after the process was executed (one of them asks
#   `husk exec` what PID 1 of the container is); a failing poststart or
#   poststop hook is a warning: the next one runs and start and delete
#   succeed.
# shellcheck shell=sh
. ./lib.sh
. ./cli-lib.sh # $tmp, $ROOT, H, $B, $R; cleaned up on exit
O=$tmp/host-out
busybox_rootfs "$R"
mkdir -p "$R/rootonly" "$O"
chmod 755 "$R/rootonly"
chmod 777 "$O" # the other checks do not hang on the capability one

# Hooks, on the host: one that fails, one that asks the container what its
# PID 1 runs now (container-init before the exec, the process after), one
# that leaves a marker.
printf '#!/bin/sh\necho "hook fails on purpose" >&2\nexit 3\n' >"$tmp/hook-fail"
cat >"$tmp/hook-pid1" <<EOF
#!/bin/sh
$(command -v husk) --root "$ROOT" exec k1 cat /proc/1/comm </dev/null >"$tmp/poststart-pid1" 2>&1
EOF
printf '#!/bin/sh\ncat >"%s"\n' "$tmp/poststop-ran" >"$tmp/hook-mark"
chmod +x "$tmp/hook-fail" "$tmp/hook-pid1" "$tmp/hook-mark"

# spec CPUS
spec() {
    cat >"$B/config.json" <<EOF
{"ociVersion":"1.0.2",
 "process":{"terminal":false,"cwd":"/","env":["PATH=/bin","HOME=/"],"user":{"uid":10,"gid":10},
   "args":["sh","-c","{ touch /rootonly/by-uid-10 && echo created; } >/out/create 2>&1; cat /sys/fs/cgroup/cpuset.cpus.effective >/out/cpus; cat /sys/devices/system/cpu/online >/out/online; awk '{if (\$5 == \"/\") print}' /proc/self/mountinfo >/out/root; exec sleep 1000"],
   "capabilities":{"bounding":["CAP_DAC_OVERRIDE","CAP_KILL"],"effective":["CAP_DAC_OVERRIDE","CAP_KILL"],"permitted":["CAP_DAC_OVERRIDE","CAP_KILL"],"inheritable":["CAP_DAC_OVERRIDE"],"ambient":["CAP_DAC_OVERRIDE"]},
   "noNewPrivileges":true},
 "root":{"path":"rootfs"},
 "mounts":[{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]},
   {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},
   {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["ro","nosuid","noexec","nodev"]},
   {"destination":"/out","type":"bind","source":"$O","options":["rbind","rw"]}],
 "hooks":{
   "poststart":[{"path":"$tmp/hook-fail"},{"path":"$tmp/hook-pid1"}],
   "poststop":[{"path":"$tmp/hook-fail"},{"path":"$tmp/hook-mark"}]},
 "linux":{"namespaces":[{"type":"pid"},{"type":"uts"},{"type":"ipc"},{"type":"network"},{"type":"cgroup"}],
   "rootfsPropagation":"unbindable",
   "resources":{"memory":{"limit":134217728},"cpu":{"cpus":"$1"}}}}
EOF
}

cpus=1
if [ "$(nproc)" -lt 2 ]; then
    # This host cannot give a second vCPU: the cpuset that needs one is
    # refused in one line before anything is made.
    spec 0-1
    H create --bundle "$B" k0 </dev/null >/dev/null 2>"$tmp/err" && fail "create with cpus 0-1 on a 1-CPU host succeeded"
    [ "$(wc -l <"$tmp/err")" = 1 ] || { show "$tmp/err"; fail "the cpuset refusal is not one line"; }
    expect_in "$tmp/err" 'linux.resources.cpu.cpus: "0-1" needs a microVM of 2 vCPUs' "the cpuset refusal names the field"
    note "1-CPU host: $(cat "$tmp/err")"
    cpus=0
fi
spec "$cpus"
H create --bundle "$B" k1 </dev/null >/dev/null 2>"$tmp/err" || { show "$tmp/err"; fail "create (no mount namespace, unbindable root, cpus $cpus)"; }
H --log "$tmp/start.log" start k1 2>"$tmp/start.err" || { show "$tmp/start.err" "$tmp/start.log"; fail "start with a failing poststart hook"; }
expect_in "$tmp/start.log" 'level=warning msg="poststart hook #0 .*hook fails on purpose' "the failing poststart hook is a warning"
pid1=$(sed -n 1p "$tmp/poststart-pid1" 2>/dev/null)
case $pid1 in
    sh | sleep) ;;
    *) show "$tmp/poststart-pid1"; fail "poststart: the container's PID 1 was not the process yet (or the second hook did not run)" ;;
esac
note "poststart: hook #0 failed (a warning), hook #1 ran and saw PID 1 = $pid1: the process was executed"

for _ in $(seq 300); do [ -s "$O/root" ] && break; sleep 0.1; done
[ -s "$O/root" ] || fail "the container wrote nothing to /out within 30 s"
assert_eq "$(cat "$O/create")" created "uid 10 with CAP_DAC_OVERRIDE creating in a root-owned directory"
assert_eq "$(stat -c %u "$R/rootonly/by-uid-10")" 10 "owner of the file on the host"
note "uid 10 + CAP_DAC_OVERRIDE created rootonly/by-uid-10 (uid 10 on the host)"
grep -q ' unbindable' "$O/root" || { show "$O/root"; fail "the container's / is not unbindable"; }
note "no mount namespace in the spec: ran; rootfsPropagation unbindable: $(cut -d' ' -f5,7 "$O/root")"
assert_eq "$(cat "$O/cpus")" "$cpus" "the container's cpuset.cpus.effective"
if [ "$cpus" = 1 ]; then
    assert_eq "$(cat "$O/online")" 0-1 "the microVM's CPUs for cpuset 1"
fi
note "cpus $cpus: cpuset.cpus.effective $(cat "$O/cpus"), VM CPUs $(cat "$O/online")"
# husk update: a cpuset beyond the VM's vCPUs is refused in one line
# naming the field (vCPUs are fixed at create); one inside it is taken.
H update --cpuset-cpus 0-7 k1 2>"$tmp/err" && fail "update --cpuset-cpus 0-7 of a VM without CPU 7 succeeded"
[ "$(wc -l <"$tmp/err")" = 1 ] || { show "$tmp/err"; fail "the update refusal is not one line"; }
expect_in "$tmp/err" 'linux.resources.cpu.cpus "0-7": CPU 7 is not in the microVM' "the update refusal names the field"
H update --cpuset-cpus 0 k1 2>"$tmp/err" || { show "$tmp/err"; fail "update --cpuset-cpus 0"; }
note "update: cpuset 0-7 refused in one line, 0 taken"

H kill k1 KILL || fail "kill"
wait_status k1 stopped 30
H --log "$tmp/delete.log" delete k1 2>"$tmp/delete.err" || { show "$tmp/delete.err" "$tmp/delete.log"; fail "delete with a failing poststop hook"; }
expect_in "$tmp/delete.log" 'level=warning msg="poststop hook #0 .*hook fails on purpose' "the failing poststop hook is a warning"
expect_in "$tmp/poststop-ran" '"id":"k1"' "the poststop hook after the failing one ran, with the state"
note "poststop: hook #0 failed (a warning), hook #1 ran, delete succeeded"
[ -z "$(H list -q)" ] || fail "containers left: $(H list -q)"
