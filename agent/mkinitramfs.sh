#!/bin/bash
# Builds the guest initramfs: an UNCOMPRESSED newc cpio (the kernel unpacks
# it without a decompressor: faster boot) holding
#   /init         the husk-agent binary (0755)
#   /dev /proc /sys /run /tmp /etc
#   /dev/console  char 5,1 and /dev/null char 1,3, so that the kernel can open
#                 an initial console before the agent mounts devtmpfs
# and, with --busybox, /bin/busybox (Debian's busybox-static) plus its applet
# symlinks, for debugging.
#
# The output is reproducible: sorted entries, uid/gid 0, fixed modes, every
# mtime = $SOURCE_DATE_EPOCH (default 0), cpio --reproducible inode numbers.
# It is written atomically (temporary file + rename). Needs root (mknod and
# root-owned files); prints nothing on success.
#
# usage: agent/mkinitramfs.sh AGENT_BIN OUT [--busybox]
set -euo pipefail

me=mkinitramfs.sh
die() { echo "$me: $*" >&2; exit 1; }

usage="usage: $me AGENT_BIN OUT [--busybox]"
agent='' out='' busybox=''
for arg in "$@"; do
    case "$arg" in
        --busybox) busybox=1 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) die "unknown option $arg ($usage)" ;;
        *)
            if [ -z "$agent" ]; then agent=$arg
            elif [ -z "$out" ]; then out=$arg
            else die "too many arguments ($usage)"
            fi ;;
    esac
done
{ [ -n "$agent" ] && [ -n "$out" ]; } || die "$usage"
[ "$(id -u)" = 0 ] || die "must run as root (creates /dev/console and /dev/null device nodes owned by uid 0)"
[ -f "$agent" ] || die "AGENT_BIN $agent: not a regular file"
[ -x "$agent" ] || die "AGENT_BIN $agent: not executable"
command -v cpio >/dev/null || die "cpio not found (apt-get install cpio)"
bb=/bin/busybox
if [ -n "$busybox" ]; then
    [ -x "$bb" ] || die "--busybox: $bb not found (apt-get install busybox-static)"
fi
epoch=${SOURCE_DATE_EPOCH:-0}
case "$epoch" in ''|*[!0-9]*) die "SOURCE_DATE_EPOCH=$epoch: not a number of seconds" ;; esac

out_dir=$(dirname -- "$out")
[ -d "$out_dir" ] || die "OUT $out: directory $out_dir does not exist"

umask 022
stage=$(mktemp -d "${TMPDIR:-/tmp}/husk-initramfs.XXXXXX")
tmp_out=
cleanup() {
    rm -rf -- "$stage"
    if [ -n "$tmp_out" ]; then rm -f -- "$tmp_out"; fi
}
trap cleanup EXIT

mkdir -m 0755 "$stage/dev" "$stage/proc" "$stage/sys" "$stage/run" "$stage/etc"
mkdir -m 1777 "$stage/tmp"
cp -- "$agent" "$stage/init"
chmod 0755 "$stage/init"
mknod -m 0600 "$stage/dev/console" c 5 1
mknod -m 0666 "$stage/dev/null" c 1 3

if [ -n "$busybox" ]; then
    mkdir -m 0755 "$stage/bin"
    cp -- "$bb" "$stage/bin/busybox"
    chmod 0755 "$stage/bin/busybox"
    # Applets at their usual paths (bin/sh, usr/bin/awk, ...), as symlinks.
    "$bb" --list-full | LC_ALL=C sort | while IFS= read -r applet; do
        case "$applet" in
            */*) ;;
            *) continue ;; # linuxrc and the like: not wanted at /
        esac
        [ -e "$stage/$applet" ] || [ -L "$stage/$applet" ] && continue
        # shellcheck disable=SC2174  # the umask (022) gives the parents 0755 too
        mkdir -p -m 0755 "$stage/$(dirname -- "$applet")"
        ln -s /bin/busybox "$stage/$applet"
    done
fi

# Deterministic metadata: owner, then every mtime (after the last entry is
# created, since creating entries changes their directory's mtime).
chown -hR 0:0 "$stage"
find "$stage" -exec touch -h -d "@$epoch" {} +

tmp_out=$(mktemp "$out_dir/.$(basename -- "$out").XXXXXX")
(cd "$stage" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    cpio --quiet --reproducible -o -H newc) >"$tmp_out" ||
    die "cpio failed writing $out"
chmod 0644 "$tmp_out"
mv -f -- "$tmp_out" "$out"
tmp_out=
