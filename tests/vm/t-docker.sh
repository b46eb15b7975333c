# Docker runs containers in husk microVMs: dockerd --add-runtime husk=...,
# then `docker run --runtime husk` with the local busybox image: echo hello,
# exit 7, stdin (-i), a TTY (-t), docker exec, docker stop / kill (exit 137),
# docker rm -f of a running container, a bind mount written from the guest,
# file coherence of a volume both ways and docker commit, --network none,
# the default bridge network (eth0 in the VM; the network itself is
# t-network.sh's), and a spec husk cannot honour (--ipc container:)
# failing with husk's one-line reason, a start that fails after create
# (docker rm then works). After each: no husk-vmm, virtiofsd or
# monitor and no husk state left.
# shellcheck shell=sh
# shellcheck disable=SC2086  # $D is a command prefix ("docker run --rm --runtime husk"), split into words on purpose
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/daemons.sh"
[ -s "$BUSYBOX_TAR" ] || fail "$BUSYBOX_TAR missing: run through tests/lab/run (the lab's L1 has the image)"
command -v dockerd >/dev/null || fail "dockerd not installed (the lab's L1 has it)"
HUSK=$(command -v husk) || fail "husk not on PATH"
tmp=$(mktemp -d); out=$tmp/out
trap 'docker rm -f $(docker ps -aq 2>/dev/null) >/dev/null 2>&1; daemons_cleanup; rm -rf "$tmp"' EXIT
# huskfault: husk whose `start` finds the VM's vsock socket gone (a start
# that fails after a successful create).
cat >"$tmp/huskfault" <<EOF
#!/bin/sh
for a in "\$@"; do
    [ "\$a" = start ] && for s in /run/husk-sock/*/vsock; do mv "\$s" "\$s.hidden"; done
done
exec "$HUSK" "\$@"
EOF
chmod +x "$tmp/huskfault"
start_dockerd --add-runtime "husk=$HUSK" --add-runtime "huskfault=$tmp/huskfault" || fail "dockerd did not start"
docker_import_busybox || fail "docker import of busybox failed"
D="docker run --rm --runtime husk"
on_fail() { # what husk and the shim logged, for a failure's diagnosis
    find /run/docker /var/run/docker /run/containerd -name husk.log -o -name log.json -o -name console.log -o -name vmm.log 2>/dev/null \
        | while IFS= read -r f; do
            echo "--- $f:"; tail -n 15 "$f"
        done
    echo "--- husk processes: $(husk_leftovers)"
    tail -n 20 "$DAEMONS_DIR/dockerd.log"
}
clean() { # WHAT: nothing of husk's is left
    wait_no_husk "$1"
    _s=$(find /run/docker /var/run/docker -name state.json -path '*runtime-husk*' 2>/dev/null)
    [ -z "$_s" ] || fail "$1: husk state left: $_s"
}

expect_run "docker run --rm --runtime husk busybox echo hello" 0 hello $D busybox echo hello
clean "after echo hello"
expect_run "exit 7" 7 "" $D --network none busybox sh -c 'exit 7'
echo hi >"$tmp/in"
expect_run "stdin: echo hi | docker run -i ... cat" 0 hi sh -c "$D -i --network none busybox cat <'$tmp/in'"
expect_run "a TTY: docker run -t" 0 "" $D -t --network none busybox sh -c 'tty; stty size; echo tty-ok'
{ grep -q '^/dev/pts/[0-9]' "$out" && grep -q 'tty-ok' "$out"; } || fail "docker run -t: no pty in the container: $(cat "$out")"
mkdir -p "$tmp/host"
expect_run "bind mount: -v HOST:/data, written in the VM" 0 "" $D --network none -v "$tmp/host:/data" busybox sh -c 'echo from-vm >/data/f'
assert_eq "$(cat "$tmp/host/f" 2>/dev/null)" from-vm "file written to a bind mount, read on the host"
expect_run "--network none: no ethernet device" 0 no-eth $D --network none busybox sh -c 'ls /sys/class/net | grep -q eth || echo no-eth'
expect_run "default network: runs, eth0 in the VM" 0 ok $D busybox sh -c 'ls /sys/class/net | grep -q eth0 && echo ok'
clean "after run/-i/-t/-v/networks"

# a long-running container: exec, stop (SIGTERM ignored by PID 1 -> SIGKILL)
expect_run "docker run -d" 0 "" docker run -d --runtime husk --network none --name c1 busybox sleep 1000
expect_run "docker exec" 3 exec-ok docker exec c1 sh -c 'echo exec-ok; exit 3'
expect_run "docker exec -i (stdin)" 0 hi sh -c "docker exec -i c1 cat <'$tmp/in'"
expect_run "docker top" 0 "" docker top c1
expect_run "docker stop -t 2" 0 c1 docker stop -t 2 c1
expect_run "exit code after stop" 0 137 docker inspect -f '{{.State.ExitCode}}' c1
expect_run "docker rm" 0 c1 docker rm c1
clean "after docker stop + rm"

expect_run "docker run -d (for kill)" 0 "" docker run -d --runtime husk --network none --name c2 busybox sh -c 'trap "exit 9" TERM; echo trap-set; while :; do sleep 0.1; done'
# A TERM that came before the trap was set would be ignored (the shell is the
# container's pid 1): kill once the shell says it is ready.
wait_logs "docker logs c2" trap-set docker logs c2
expect_run "docker kill -s TERM reaches the trap" 0 c2 docker kill -s TERM c2
expect_run "docker wait" 0 9 docker wait c2
expect_run "docker rm" 0 c2 docker rm c2

expect_run "docker run -d -m 256m (for rm -f)" 0 "" docker run -d --runtime husk --network none -m 256m --name c3 busybox sleep 1000
# Docker's cgroupfs driver names /docker/<id>: husk's monitor (the pid Docker
# knows), husk-vmm and virtiofsd are in it; memory.max is the VM's RAM
# (256 MiB + 64) + husk's 128 MiB overhead.
cg=/sys/fs/cgroup/docker/$(docker inspect -f '{{.Id}}' c3)
hp=$(find_procs husk-vmm virtiofsd | cut -d' ' -f1)
{ find_procs husk-vmm | grep -q . && find_procs virtiofsd | grep -q .; } || fail "want husk-vmm and virtiofsd (QEMU's forks a sandboxed child), found: $(find_procs husk-vmm virtiofsd | tr '\n' ' ')"
# shellcheck disable=SC2086  # one pid per word
host_cgroup_has "$cg" $(((256 + 64 + 128) << 20)) "$(docker inspect -f '{{.State.Pid}}' c3)" $hp
note "host cgroup $cg: memory.max $(cat "$cg/memory.max"), memory.current $(($(cat "$cg/memory.current") >> 20)) MiB, pids.current $(cat "$cg/pids.current")"
expect_run "docker rm -f of a running container" 0 c3 docker rm -f c3
[ ! -e "$cg" ] || fail "docker rm -f left the host cgroup $cg"
clean "after docker rm -f"

# File coherence (docs/file-io.md): a volume is the host's directory: the
# guest's writes are on the host at once, the host's reach the guest within
# the cache timeout of volumes (1 s); `docker commit` keeps the rootfs writes.
mkdir -p "$tmp/vol"; echo old >"$tmp/vol/f"
expect_run "docker run -d (volume)" 0 "" docker run -d --runtime husk --network none -v "$tmp/vol:/v" --name c5 busybox sleep 1000
expect_run "the guest reads the host's file" 0 old docker exec c5 cat /v/f
expect_run "a name the host has not made yet" 1 "" docker exec c5 cat /v/new
echo new >"$tmp/vol/f"; echo made >"$tmp/vol/new"; t=$(now_ms)
wait_logs "the host's change to a file, in the guest" "^new$" docker exec c5 cat /v/f
wait_logs "the host's new file, in the guest" "^made$" docker exec c5 cat /v/new
note "the host's writes seen in the guest after $(( $(now_ms) - t )) ms (1 s cache timeout + docker exec)"
expect_run "the guest writes the volume" 0 "" docker exec c5 sh -c 'echo from-guest >/v/g'
assert_eq "$(cat "$tmp/vol/g" 2>/dev/null)" from-guest "the guest's write, read on the host at once"
expect_run "the guest writes its rootfs" 0 "" docker exec c5 sh -c 'echo committed >/made'
expect_run "docker commit" 0 "" docker commit c5 husk-committed
expect_run "the committed image holds the guest's write" 0 committed docker run --rm --network none husk-committed cat /made
expect_run "docker rm -f" 0 c5 docker rm -f c5
docker rmi husk-committed >/dev/null 2>&1
clean "after the volume and commit checks"

# a start that fails after create: Docker can remove the container
expect_run "a failed start" 125 "" docker run --runtime huskfault --network none --name f1 busybox true
grep -q "the container is stopped" "$out.err" || fail "a failed start's error: $(cat "$out.err")"
expect_run "docker rm after a failed start" 0 f1 docker rm f1
clean "after a failed start"

# a namespace a microVM cannot join: husk's one-line reason reaches the user
expect_run "docker run -d (ipc owner)" 0 "" docker run -d --runtime husk --network none --ipc shareable --name c4 busybox sleep 1000
expect_run "--ipc container:c4 is refused" 125 "" $D --network none --ipc container:c4 busybox true
grep -q "not possible from a microVM" "$out.err" || fail "--ipc container: error does not say why: $(cat "$out.err")"
expect_run "docker rm -f" 0 c4 docker rm -f c4
clean "after a refused spec"
stop_dockerd
