# Containers in husk microVMs join the daemon's network: Docker's default
# bridge (a published port answers on the lab host and on the container's
# IP; a container fetches from a server on the host and from another husk
# container by IP), a user-defined network (containers reach each other by
# name through Docker's embedded DNS, forwarded over vsock), --network host
# refused with husk's one-line reason, --network none gives lo only, kill -9
# of the monitor or of husk-vmm leaves nothing behind, and Podman's CNI
# bridge with a published port and a second network (two NICs). After each
# group: no husk-vmm, virtiofsd or monitor left, and no husk tap in any
# network namespace the daemons still have.
# shellcheck shell=sh
# shellcheck disable=SC2086  # $P is a command prefix ("podman --runtime PATH"), split into words on purpose
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/daemons.sh"
[ -s "$BUSYBOX_TAR" ] || fail "$BUSYBOX_TAR missing: run through tests/lab/run (the lab's L1 has the image)"
command -v dockerd >/dev/null || fail "dockerd not installed (the lab's L1 has it)"
HUSK=$(command -v husk) || fail "husk not on PATH"
tmp=$(mktemp -d); out=$tmp/out
srv=
trap '[ -n "$srv" ] && kill $srv 2>/dev/null; docker rm -f $(docker ps -aq 2>/dev/null) >/dev/null 2>&1; docker network rm husknet >/dev/null 2>&1; podman rm -f -a >/dev/null 2>&1; podman network rm pnet2 >/dev/null 2>&1; daemons_cleanup; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/www" "$tmp/hostwww"
echo husk-page >"$tmp/www/index.html"
echo host-page >"$tmp/hostwww/index.html"

on_fail() {
    find /run/docker /var/run/docker /run/containers /var/lib/containers -name husk.log -o -name console.log -o -name vmm.log 2>/dev/null \
        | while IFS= read -r f; do echo "--- $f:"; tail -n 15 "$f"; done
    echo "--- husk processes: $(husk_leftovers)"
    tail -n 20 "$DAEMONS_DIR/dockerd.log"
}
# http_body http://HOST[:PORT]/PATH: the body of a GET, within 5 s. Bash's
# /dev/tcp, not wget: L1's busybox 1.35 wget crashes (SIGSEGV) when the
# connection is refused, as it is until the server in the VM listens.
http_body() {
    # shellcheck disable=SC2016  # expanded by the inner bash
    timeout 5 bash -c 'h=${1#http://}; hp=${h%%/*}; path=/${h#*/}; host=${hp%:*}; port=80
        case $hp in *:*) port=${hp##*:} ;; esac
        exec 3<>"/dev/tcp/$host/$port" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$path" "$hp" >&3
        sed "1,/^\r\{0,1\}\$/d" <&3' _ "$1"
}
# GET: shell code for a container; `get HOST PORT` prints the last line of
# the body of HOST:PORT's / and fails if it is empty (busybox nc, not wget:
# the image's static busybox wget crashes with SIGSEGV).
# shellcheck disable=SC2016  # expanded by the container's sh
GET='get() { _b=$(printf "GET / HTTP/1.0\r\n\r\n" | nc -w 20 "$1" "$2" | tail -n 1); [ -n "$_b" ] && echo "$_b"; }'
# fetch WHAT URL WANT: poll URL from the lab host (up to 60 s: the server
# in the VM is starting) until it serves WANT.
fetch() {
    _i=0
    until [ "$(http_body "$2" 2>/dev/null)" = "$3" ]; do
        _i=$((_i + 1)); [ $_i -lt 60 ] || { on_fail >&2; fail "$1: $2 did not serve '$3' within 60 s"; }
        sleep 1
    done
    note "$1: $2 served '$3'"
}
# no_taps WHAT: no husk tap left in any network namespace Docker or Podman keep
no_taps() {
    for ns in /proc/1/ns/net /run/docker/netns/* /run/netns/*; do
        [ -e "$ns" ] || continue
        if nsenter --net="$ns" cat /proc/net/dev 2>/dev/null | grep -q 'husk-tap'; then
            fail "$1: a husk tap is left in $ns"
        fi
    done
}
clean() { wait_no_husk "$1"; no_taps "$1"; }
# vhost_in_use: whether a running husk-vmm has /dev/vhost-net open, by device
# number (husk-vmm's jail detached /dev: the fd's path reads /vhost-net).
vhost_in_use() {
    _want=$(stat -c %t:%T /dev/vhost-net) || return 1
    for p in $(find_procs husk-vmm | cut -d' ' -f1); do
        for f in /proc/"$p"/fd/*; do
            [ -c "$f" ] && [ "$(stat -L -c %t:%T "$f" 2>/dev/null)" = "$_want" ] && return 0
        done
    done
    return 1
}

start_dockerd --add-runtime "husk=$HUSK" || fail "dockerd did not start"
docker_import_busybox || fail "docker import of busybox failed"

# -- the default bridge
expect_run "docker run -d -p 8080:80 httpd" 0 "" docker run -d --runtime husk --name web -p 8080:80 \
    -v "$tmp/www:/www:ro" busybox httpd -f -p 80 -h /www
fetch "published port" http://127.0.0.1:8080/ husk-page
ip=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' web)
[ -n "$ip" ] || fail "docker inspect gives web no IP address"
fetch "the container's own IP" "http://$ip/" husk-page
vhost_in_use || fail "web's husk-vmm has no /dev/vhost-net open: vhost-net is the default backend where the host has it"
gw=$(docker inspect -f '{{.NetworkSettings.Gateway}}' web)
[ -n "$gw" ] || fail "docker inspect gives web no gateway"
busybox httpd -f -p "$gw:8090" -h "$tmp/hostwww" & srv=$!
expect_run "a husk container fetches from the host (gateway $gw) and from web ($ip)" 0 "host-page
husk-page" docker run --rm --runtime husk busybox sh -c "$GET; get $gw 8090 && get $ip 80"
expect_run "the container sees eth0 with its address and lo" 0 "" docker run --rm --runtime husk busybox \
    sh -c 'ip -o addr show eth0 | grep -q "inet 172\." && ip -o link show lo | grep -q UP && ! ls /sys/class/net | grep -q husk'
kill $srv; srv=
expect_run "docker rm -f web" 0 web docker rm -f web
clean "after the default bridge"

# -- a user-defined network: by name
expect_run "docker network create husknet" 0 "" docker network create husknet
expect_run "docker run -d --network husknet httpd" 0 "" docker run -d --runtime husk --network husknet --name web2 \
    -v "$tmp/www:/www:ro" busybox httpd -f -p 80 -h /www
expect_run "a husk container reaches web2 by name" 0 husk-page docker run --rm --runtime husk --network husknet busybox \
    sh -c "$GET"'; for i in 1 2 3 4 5 6 7 8 9 10; do get web2 80 2>/dev/null && exit 0; sleep 2; done; nslookup web2; exit 1'
expect_run "docker rm -f web2" 0 web2 docker rm -f web2
expect_run "docker network rm husknet" 0 husknet docker network rm husknet
clean "after the user-defined network"

# -- what a microVM cannot do
expect_run "--network host is refused" 125 "" docker run --rm --runtime husk --network host busybox true
grep -q "host's network stack" "$out.err" || fail "--network host: error does not say why: $(cat "$out.err")"
clean "after --network host"
expect_run "--network none: lo only" 0 lo docker run --rm --runtime husk --network none busybox ls /sys/class/net
clean "after --network none"

# wait_docker_stopped NAME WHAT: Docker sees container NAME stopped within
# 30 s of WHAT, or the test fails.
wait_docker_stopped() {
    _i=0
    until [ "$(docker inspect -f '{{.State.Running}}' "$1")" = false ]; do
        _i=$((_i + 1)); [ $_i -lt 150 ] || fail "$1 still running 30 s after $2"
        sleep 0.2
    done
}

# -- kill -9 of the monitor (the pid Docker waits on): the VM, its helpers
#    and the tap go with it, and Docker's own cleanup still works.
expect_run "docker run -d (to be killed)" 0 "" docker run -d --runtime husk --name k9 busybox sleep 600
mon=$(docker inspect -f '{{.State.Pid}}' k9)
[ "${mon:-0}" -gt 0 ] || fail "docker inspect gives k9 no pid"
kill -9 "$mon"
wait_docker_stopped k9 "kill -9 of its monitor ($mon)"
expect_run "docker rm -f k9" 0 k9 docker rm -f k9
clean "after kill -9 of the monitor"
# -- husk-vmm crashes (kill -9): the container ends, and the same holds.
expect_run "docker run -d (its VMM to be killed)" 0 "" docker run -d --runtime husk --name v9 busybox sleep 600
vmm=$(find_procs husk-vmm | cut -d' ' -f1)
[ -n "$vmm" ] || fail "no husk-vmm for v9"
kill -9 $vmm
wait_docker_stopped v9 "kill -9 of its husk-vmm ($vmm)"
expect_run "docker rm -f v9" 0 v9 docker rm -f v9
clean "after kill -9 of husk-vmm"
stop_dockerd

# -- Podman: the CNI bridge and a published port; two networks, two NICs
podman_import_busybox || fail "podman import of busybox failed"
P="podman --runtime $HUSK"
expect_run "podman network create pnet2" 0 pnet2 $P network create pnet2
# The NICs' other backend (husk-vmm's user-space virtio-net; Docker's
# containers above have the default, the kernel's vhost-net, which L1 has):
# Docker 20.10 has no --annotation.
expect_run "podman run -d -p 8081:80 --network podman,pnet2 (user-space virtio-net) httpd" 0 "" $P run -d \
    --name pweb -p 8081:80 --network podman,pnet2 --annotation io.husk.net.backend=virtio -v "$tmp/www:/www:ro" \
    busybox httpd -f -p 80 -h /www
fetch "podman: published port" http://127.0.0.1:8081/ husk-page
ip2=$($P inspect -f '{{(index .NetworkSettings.Networks "pnet2").IPAddress}}' pweb)
[ -n "$ip2" ] || fail "podman inspect gives pweb no address on pnet2"
fetch "podman: the second NIC's address on pnet2" "http://$ip2/" husk-page
! vhost_in_use || fail "io.husk.net.backend=virtio: pweb's husk-vmm has /dev/vhost-net open"
expect_run "podman: the container has two NICs with addresses" 0 2 $P exec pweb \
    sh -c 'ip -o -4 addr show | grep -vc " lo "'
expect_run "podman rm -f" 0 "" $P rm -f -t 0 pweb
expect_run "podman network rm pnet2" 0 pnet2 $P network rm pnet2
clean "after podman"
