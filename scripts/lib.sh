# Shared helpers for husk's shell scripts. Source it: . "$(dirname "$0")/../scripts/lib.sh"
# shellcheck shell=bash

HUSK_REPO=${HUSK_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
HUSK_CACHE=${HUSK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/husk}
export HUSK_REPO HUSK_CACHE

# Messages go to stderr so that scripts can print results on stdout.
say() { printf '%s\n' "$*" >&2; }
step() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need_pkgs PKG...: install the Debian packages that are missing (idempotent).
need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages ${missing[*]} and not root to install them"
    step "installing Debian packages: ${missing[*]}"
    # Refresh the lists once per boot at most; stale lists fail downloads.
    if [ ! -e /run/husk-apt-updated ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
        touch /run/husk-apt-updated 2>/dev/null || true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

# hash_of FILE|STRING...: a short content key (sha256 over the arguments' contents).
hash_of() {
    local a
    for a in "$@"; do
        if [ -f "$a" ]; then printf 'file:%s\n' "$(basename "$a")"; cat "$a"; else printf 'str:%s\n' "$a"; fi
    done | sha256sum | cut -c1-16
}

# with_progress LABEL LOG CMD...: run CMD with output in LOG, printing a
# heartbeat (lines of log and elapsed time) every 15 s; on failure show the
# tail of LOG.
with_progress() {
    local label=$1 log=$2; shift 2
    local start=$SECONDS pid rc
    "$@" >"$log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        if (( (SECONDS - start) % 15 == 0 )); then
            say "    [$label] $((SECONDS - start))s, $(wc -l <"$log") lines of output: $(tail -n1 "$log" | cut -c1-80)"
        fi
    done
    wait "$pid"; rc=$?
    if [ $rc -ne 0 ]; then
        say "    [$label] FAILED (exit $rc) after $((SECONDS - start))s; last lines of $log:"
        tail -n 30 "$log" >&2
        return $rc
    fi
    say "    [$label] done in $((SECONDS - start))s"
}

# cache_lock NAME: hold an exclusive lock (for this shell's lifetime) so that
# concurrent runs don't build the same cached artefact at once.
cache_lock() {
    mkdir -p "$HUSK_CACHE"
    exec 9>"$HUSK_CACHE/.$1.lock"
    flock -n 9 || { say "    waiting for another build of $1"; flock 9; }
}

# lab_mode: 'direct' on a host with hardware KVM (kvm_intel/kvm_amd, not PVM),
# else 'nested' (VMs boot inside tests/lab's L1 machine). HUSK_LAB_MODE overrides.
lab_mode() {
    if [ -n "${HUSK_LAB_MODE:-}" ]; then echo "$HUSK_LAB_MODE"
    elif [ -c /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; } && [ ! -d /sys/module/kvm_pvm ]; then echo direct
    else echo nested; fi
}

# husk_build: every binary: the host tools (release profile) and the guest
# agent that goes into the VM's initramfs (`guest` profile: smaller, so less
# to copy, unpack and page in at boot; see Cargo.toml).
husk_build() {
    (cd "$HUSK_REPO" && cargo build --release --workspace --quiet \
        && cargo build --profile guest -p husk-agent --quiet)
}
