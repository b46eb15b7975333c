# A read-only volume and a read-only rootfs stay read-only on the host even
# for a privileged container (CAP_SYS_ADMIN) that mounts the container's
# virtio-fs share (tag "husk") itself, around the guest's own read-only
# mounts: virtiofsd serves host binds that are read-only themselves, and
# nosuid,nodev (seen in the monitor's mount namespace). A read-write volume
# reached the same way takes the write (so the check can fail). And
# virtiofsd itself is confined: its namespaces, seccomp, capabilities. One VM.
# shellcheck shell=sh
. ./lib.sh
. ./cli-lib.sh # $tmp, $ROOT, H, $B, $R; cleaned up on exit
busybox_rootfs "$R"
# root.readonly: the monitor makes the missing mount points (/proc, /dev,
# /mnt, /rw, the file /ro-file) on the host before the rootfs turns
# read-only; /ro is there already.
mkdir -p "$R/ro"
mkdir -p "$tmp/ro-vol" "$tmp/rw-vol"
echo orig >"$tmp/ro-vol/file"
echo orig >"$tmp/ro-file"
: >"$tmp/rw-vol/marker"
# The share names a bind volume m<its index in mounts>: /ro is m3, /rw m4,
# /ro-file m5; the rootfs is rootfs.
probes='/mnt/m3/file /mnt/m3/new /mnt/m5 /mnt/rootfs/etc/passwd /mnt/rootfs/planted /ro/file'
cat >"$R/probe.sh" <<PROBE
mount -t virtiofs husk /mnt || { echo mount-failed; exit 2; }
[ -f /mnt/m4/marker ] || { echo "the share holds: \$(ls /mnt)"; exit 3; }
echo via-tag >/mnt/m4/file && echo rw-written
for f in $probes; do
    if echo pwned 2>/dev/null >"\$f"; then echo "written \$f"; else echo "refused \$f"; fi
done
PROBE
cat >"$B/config.json" <<EOF
{"ociVersion":"1.0.2",
 "process":{"terminal":false,"args":["sh","/probe.sh"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0},
   "capabilities":{"bounding":["CAP_SYS_ADMIN","CAP_DAC_OVERRIDE"],"effective":["CAP_SYS_ADMIN","CAP_DAC_OVERRIDE"],"permitted":["CAP_SYS_ADMIN","CAP_DAC_OVERRIDE"]}},
 "root":{"path":"rootfs","readonly":true},
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
   {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]},
   {"destination":"/mnt","type":"tmpfs","source":"tmpfs"},
   {"destination":"/ro","type":"bind","source":"$tmp/ro-vol","options":["rbind","ro"]},
   {"destination":"/rw","type":"bind","source":"$tmp/rw-vol","options":["rbind","rw"]},
   {"destination":"/ro-file","type":"bind","source":"$tmp/ro-file","options":["bind","ro"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"network"}]}}
EOF

H create --bundle "$B" --pid-file "$tmp/pid" ro1 >"$tmp/out" 2>"$tmp/err" </dev/null \
    || { tail -n 20 "$tmp/err" >&2; fail "create"; }
pid=$(cat "$tmp/pid")
# The share's binds in the monitor's mount namespace (mountinfo field 5 is
# the mount point, field 6 its per-mount options).
opts() { awk -v p="$ROOT/ro1/share/$1" '$5 == p { print $6 }' "/proc/$pid/mountinfo"; }
for m in rootfs m3 m5; do
    case ",$(opts $m)," in *,ro,*nosuid*nodev*) ;; *) fail "share $m on the host: options '$(opts $m)', want ro,nosuid,nodev" ;; esac
done
case ",$(opts m4)," in *,rw,*nosuid*nodev*) ;; *) fail "share m4 on the host: options '$(opts m4)', want rw,nosuid,nodev" ;; esac
note "host binds: rootfs $(opts rootfs), m3 $(opts m3), m4 $(opts m4), m5 $(opts m5)"
# virtiofsd's own confinement (QEMU 7.2's, on by default): the process that
# serves the share runs in mount, pid and network namespaces of its own,
# pivoted into the share, under a seccomp filter with no_new_privs, with only
# the capabilities file serving needs (no CAP_SYS_ADMIN, CAP_NET_*, ...).
vfsd=
for p in $(find_procs virtiofsd | awk '{ print $1 }'); do
    grep -q '^Seccomp:[[:space:]]*2$' "/proc/$p/status" 2>/dev/null && vfsd=$p
done
[ -n "$vfsd" ] || fail "no virtiofsd under seccomp: $(find_procs virtiofsd)"
st() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$vfsd/status"; }
assert_eq "$(st NoNewPrivs)" 1 "virtiofsd NoNewPrivs"
cap=$(st CapEff)
for bit in 21 12 16 17 19 25; do # SYS_ADMIN NET_ADMIN SYS_MODULE SYS_RAWIO SYS_PTRACE SYS_TIME
    [ $(( (0x$cap >> bit) & 1 )) = 0 ] || fail "virtiofsd has capability $bit (CapEff $cap)"
done
[ "$(readlink "/proc/$vfsd/ns/net")" != "$(readlink /proc/self/ns/net)" ] || fail "virtiofsd in the host's network namespace"
[ "$(readlink "/proc/$vfsd/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] || fail "virtiofsd in the host's mount namespace"
assert_eq "$(cd "/proc/$vfsd/root" && echo *)" "m3 m4 m5 rootfs" "virtiofsd's root (the share, not the host's)"
note "virtiofsd $vfsd: Seccomp 2, NoNewPrivs 1, CapEff $cap, own mount and network namespaces, root = the share"
H start ro1 || fail "start"
_i=0
until H state ro1 2>/dev/null | grep -q '"status": "stopped"'; do
    _i=$((_i + 1)); [ $_i -lt 300 ] || fail "the container did not stop within 60 s: $(cat "$tmp/out" "$tmp/err")"
    sleep 0.2
done
out=$(cat "$tmp/out")
echo "$out" | sed 's/^/    container: /'
echo "$out" | grep -q '^rw-written$' || fail "the rw volume through the tag was not written (the check could not fail): $out $(cat "$tmp/err")"
assert_eq "$(cat "$tmp/rw-vol/file" 2>/dev/null)" via-tag "the rw volume's file on the host"
for f in $probes; do
    echo "$out" | grep -q "^refused $f\$" || fail "$f: the write was not refused"
done
assert_eq "$(cat "$tmp/ro-vol/file")" orig "the ro volume's file on the host"
[ ! -e "$tmp/ro-vol/new" ] || fail "a file was made in the ro volume on the host"
assert_eq "$(cat "$tmp/ro-file")" orig "the ro file volume on the host"
assert_eq "$(head -n 1 "$R/etc/passwd")" 'root:x:0:0:root:/root:/bin/sh' "the read-only rootfs's /etc/passwd on the host"
[ ! -e "$R/planted" ] || fail "a file was made in the read-only rootfs on the host"
{ [ -d "$R/rw" ] && [ -f "$R/ro-file" ] && [ -d "$R/mnt" ]; } || fail "the monitor did not make the mount points in the read-only rootfs"
H delete ro1 || fail "delete"
note "a privileged container mounting the share itself: ro volume, ro file and ro rootfs refused, rw volume written"
