# husk's main job: a container in a microVM. Builds an OCI bundle with a
# busybox root file system and runs it with the runc-compatible `husk` CLI,
# which boots husk-vmm with the guest kernel, shares the rootfs over virtio-fs
# and runs the process through husk-agent. Where Podman is installed (the lab
# has it), the same through `podman --runtime husk`.
# Run by scripts/demo through tests/lab/run.
# shellcheck shell=sh
cd "$(dirname "$0")" && . ./lib.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
busybox_rootfs "$tmp/bundle/rootfs"
cat >"$tmp/bundle/config.json" <<'JSON'
{"ociVersion":"1.0.2",
 "process":{"args":["sh","-c","echo \"hello from a container in a husk microVM: kernel $(uname -r), $(nproc) vCPU, pid $$, hostname $(hostname)\"; cat /proc/self/cgroup"],
   "cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0}},
 "root":{"path":"rootfs"},
 "hostname":"husk-demo",
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
   {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"network"},{"type":"cgroup"}],
   "resources":{"memory":{"limit":67108864}}}}
JSON
echo "\$ husk run --bundle $tmp/bundle demo"
t0=$(now_ms)
husk --root "$tmp/state" run --bundle "$tmp/bundle" demo || fail "husk run failed (exit $?)"
echo "(booted, ran and cleaned up in $(( $(now_ms) - t0 )) ms; in the nested lab everything runs 20-50x slower than on hardware)"
if command -v podman >/dev/null 2>&1 && [ -r "${HUSK_LAB_BUSYBOX_TAR:-/usr/share/husk-lab/busybox.tar}" ]; then
    . ./daemons.sh
    podman_import_busybox >/dev/null 2>&1 || fail "importing the busybox image into Podman failed"
    echo "\$ podman --runtime $(command -v husk) run --rm busybox echo hello from Podman through husk"
    podman --runtime "$(command -v husk)" run --rm --network none busybox echo hello from Podman through husk \
        || fail "podman --runtime husk failed"
fi
