#!/usr/bin/env bash
# Build husk's guest kernel from Debian's linux-source-6.12 package and the
# fragment guest-kernel/husk.config. Prints the output directory, which holds
# `vmlinux` (uncompressed ELF with a PVH note, for direct boot), `bzImage` and
# `config`. The result is cached under $HUSK_CACHE/kernel/<key>, keyed by the
# source package version, the fragment and this script: a second run is instant.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
here=$HUSK_REPO/guest-kernel

need_pkgs linux-source-6.12 bc flex bison libelf-dev libssl-dev make gcc xz-utils
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.12)
key=$(hash_of "linux-source-6.12=$srcver" "$here/husk.config" "$here/build.sh")
out=$HUSK_CACHE/kernel/$key
cache_lock kernel
if [ -s "$out/vmlinux" ] && [ -s "$out/bzImage" ]; then
    echo "$out"; exit 0
fi

step "building guest kernel (linux-source-6.12 $srcver, key $key)"
src=$HUSK_CACHE/src/linux-source-6.12-$srcver
if [ ! -f "$src/.husk-extracted" ]; then
    say "    extracting /usr/src/linux-source-6.12.tar.xz"
    rm -rf "$src" && mkdir -p "$src"
    tar -xJf /usr/src/linux-source-6.12.tar.xz -C "$src" --strip-components=1
    touch "$src/.husk-extracted"
fi
build=$HUSK_CACHE/kernel-build/$key
rm -rf "$build" && mkdir -p "$build"
mk() { make -C "$src" O="$build" ARCH=x86_64 "$@"; }
mk tinyconfig >"$build/config.log" 2>&1 || { tail "$build/config.log" >&2; die "make tinyconfig failed"; }
"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$here/husk.config" >>"$build/config.log" 2>&1 \
    || { tail "$build/config.log" >&2; die "merging guest-kernel/husk.config failed"; }
mk olddefconfig >>"$build/config.log" 2>&1 || { tail "$build/config.log" >&2; die "make olddefconfig failed"; }

# Every option of the fragment must have survived olddefconfig.
bad=0
while IFS= read -r line; do
    case "$line" in CONFIG_*=*) ;; *) continue ;; esac
    opt=${line%%=*} want=${line#*=}
    if [ "$want" = n ]; then
        grep -q "^$opt=" "$build/.config" && { say "    $opt: wanted n, got $(grep "^$opt=" "$build/.config")"; bad=1; }
    else
        grep -qx "$opt=$want" "$build/.config" || { say "    $opt: wanted $want, got $(grep -E "^(# )?${opt}[= ]" "$build/.config" || echo unset)"; bad=1; }
    fi
done <"$here/husk.config"
[ $bad -eq 0 ] || die "guest-kernel/husk.config: the options above did not survive olddefconfig (missing dependencies?)"

with_progress kernel "$build/build.log" mk -j"$(nproc)" vmlinux bzImage
tmp=$out.tmp.$$
rm -rf "$tmp" && mkdir -p "$tmp"
cp "$build/vmlinux" "$tmp/vmlinux"
cp "$build/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$build/.config" "$tmp/config"
rm -rf "$out" && mv "$tmp" "$out"
rm -rf "$build"   # the object tree is 100+ MB; the result is all we keep
say "    guest kernel: $out ($(du -h "$out/vmlinux" | cut -f1) vmlinux, $(du -h "$out/bzImage" | cut -f1) bzImage)"
echo "$out"
