# Container daemons for tests that run inside the lab's L1 machine (Debian
# bookworm: docker.io 20.10, containerd 1.6, podman 4.3, runc, crun; no
# systemd, cgroup v2 with every controller, cgroupfs managers). Source it
# (POSIX sh) after lib.sh (daemons_cleanup uses its find_procs) and clean up
# with a trap:
#
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/daemons.sh"
#   trap daemons_cleanup EXIT
#   start_dockerd --add-runtime husk=/path/to/husk    # extra args go to dockerd
#   docker_import_busybox                             # busybox:latest
#   docker run --rm --runtime husk busybox echo hello
#   podman_import_busybox; podman --runtime /path/to/husk run --rm busybox true
#   start_containerd; ctr_import_busybox              # docker.io/library/busybox:latest
#   ctr run --rm docker.io/library/busybox:latest id1 echo hello
#
# Functions return non-zero with the daemon's log tail on stderr when
# something fails; they never exit the caller. Logs and pid files live in
# $DAEMONS_DIR (default /tmp/husk-daemons). Every wait is bounded by
# $HUSK_DAEMONS_TIMEOUT seconds (default 180: everything in L1 runs under TCG).
#
# dockerd runs with defaults otherwise: socket /var/run/docker.sock, data root
# /var/lib/docker (overlay2 on L1's ext4 snapshot root), the default bridge
# with iptables (nft), its own managed containerd. start_containerd runs a
# separate containerd on $CONTAINERD_ADDRESS (exported, so ctr finds it; not
# the default socket, so that dockerd keeps its own containerd). Podman is
# configured in /etc/containers/containers.conf (tests/lab/l1/containers.conf:
# cgroupfs, file events, k8s-file logs, crun by default, CNI bridge).
# shellcheck shell=sh

HUSK_LAB_SHARE=/usr/share/husk-lab
BUSYBOX_TAR=$HUSK_LAB_SHARE/busybox.tar       # rootfs: bin/busybox + applets, etc/passwd, etc/group, tmp
BUSYBOX_OCI=$HUSK_LAB_SHARE/busybox-oci.tar   # OCI layout + docker-save archive of the same
BUSYBOX_REF=docker.io/library/busybox:latest  # its name in containerd (ctr)
DAEMONS_DIR=${DAEMONS_DIR:-/tmp/husk-daemons}
CONTAINERD_ADDRESS=/run/husk-containerd/containerd.sock
export CONTAINERD_ADDRESS

_dmn_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# _dmn_alive PID: PID exists and is not a zombie
_dmn_alive() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
    [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}
_dmn_tail() { echo "--- last lines of $1:" >&2; tail -n "${2:-30}" "$1" >&2; }
# _dmn_wait NAME PID LOG CMD...: poll CMD until it succeeds; fail if PID dies
# or the time is up. Prints how long the daemon took.
_dmn_wait() {
    _n=$1 _p=$2 _l=$3; shift 3
    _t0=$(_dmn_ms) _lim=$(( ${HUSK_DAEMONS_TIMEOUT:-180} * 1000 ))
    while :; do
        if "$@" >/dev/null 2>&1; then
            echo "    $_n: up in $(( $(_dmn_ms) - _t0 )) ms (pid $_p, log $_l)" >&2
            return 0
        fi
        if ! _dmn_alive "$_p"; then
            wait "$_p" 2>/dev/null; echo "$_n: exited (status $?) before answering to '$*'" >&2
            _dmn_tail "$_l"; return 1
        fi
        if [ $(( $(_dmn_ms) - _t0 )) -ge "$_lim" ]; then
            echo "$_n: no answer to '$*' within ${HUSK_DAEMONS_TIMEOUT:-180} s" >&2
            _dmn_tail "$_l"; return 1
        fi
        sleep 0.2
    done
}
# _dmn_stop NAME: TERM the daemon from its pid file, KILL it after 30 s.
_dmn_stop() {
    _f=$DAEMONS_DIR/$1.pid
    [ -s "$_f" ] || return 0
    _p=$(cat "$_f")
    if _dmn_alive "$_p"; then
        kill -TERM "$_p" 2>/dev/null
        _i=0
        while _dmn_alive "$_p" && [ $_i -lt 150 ]; do sleep 0.2; _i=$((_i + 1)); done
        if _dmn_alive "$_p"; then
            echo "$1 (pid $_p) did not stop within 30 s of SIGTERM; killing it" >&2
            kill -KILL "$_p" 2>/dev/null
        fi
    fi
    wait "$_p" 2>/dev/null
    rm -f "$_f"
    return 0
}

# start_dockerd [DOCKERD-ARGS...]: start dockerd, wait until `docker info` answers.
start_dockerd() {
    mkdir -p "$DAEMONS_DIR"
    if _dmn_alive "$(cat "$DAEMONS_DIR/dockerd.pid" 2>/dev/null)"; then
        echo "start_dockerd: dockerd is already running" >&2; return 1
    fi
    dockerd --exec-opt native.cgroupdriver=cgroupfs --storage-driver overlay2 "$@" \
        >"$DAEMONS_DIR/dockerd.log" 2>&1 &
    echo $! >"$DAEMONS_DIR/dockerd.pid"
    _dmn_wait dockerd $! "$DAEMONS_DIR/dockerd.log" docker info
}
stop_dockerd() { _dmn_stop dockerd; }

# start_containerd [CONTAINERD-ARGS...]: a containerd for ctr on
# $CONTAINERD_ADDRESS (root /var/lib/containerd, no CRI plugin).
start_containerd() {
    mkdir -p "$DAEMONS_DIR" "${CONTAINERD_ADDRESS%/*}"
    if _dmn_alive "$(cat "$DAEMONS_DIR/containerd.pid" 2>/dev/null)"; then
        echo "start_containerd: containerd is already running" >&2; return 1
    fi
    cat >"$DAEMONS_DIR/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "${CONTAINERD_ADDRESS%/*}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CONTAINERD_ADDRESS"
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
EOF
    containerd --config "$DAEMONS_DIR/containerd.toml" "$@" >"$DAEMONS_DIR/containerd.log" 2>&1 &
    echo $! >"$DAEMONS_DIR/containerd.pid"
    _dmn_wait containerd $! "$DAEMONS_DIR/containerd.log" ctr --address "$CONTAINERD_ADDRESS" version
}
stop_containerd() { _dmn_stop containerd; }

_BB_CHANGES='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
# docker_import_busybox: busybox:latest in dockerd (imported once per data root)
docker_import_busybox() {
    docker image inspect busybox:latest >/dev/null 2>&1 && return 0
    docker import -c "$_BB_CHANGES" -c 'CMD ["sh"]' "$BUSYBOX_TAR" busybox:latest >/dev/null
}
# podman_import_busybox: busybox:latest (localhost/busybox:latest) in podman's storage
podman_import_busybox() {
    podman image exists busybox:latest 2>/dev/null && return 0
    podman import -c "$_BB_CHANGES" -c 'CMD ["sh"]' "$BUSYBOX_TAR" busybox:latest >/dev/null
}
# ctr_import_busybox: $BUSYBOX_REF in containerd's default namespace, unpacked
ctr_import_busybox() {
    ctr images ls -q 2>/dev/null | grep -qxF "$BUSYBOX_REF" && return 0
    ctr images import "$BUSYBOX_OCI" >/dev/null
}

# daemons_cleanup: for a trap; stops what this file started and kills shims
# and monitors that stopped daemons left behind.
daemons_cleanup() {
    stop_dockerd
    stop_containerd
    find_procs 'containerd-shim*' conmon docker-proxy | while read -r _p _n; do kill -KILL "$_p" 2>/dev/null; done
    return 0
}
