# husk-vmm smoke boots the default kernel + agent initramfs, pings the agent
# over vsock, prints exactly one line and exits 0; --vcpus 2 reaches the guest.
# `run --startup-only` sets a VM up, stops before the first KVM_RUN (no guest
# output) and exits 0 without leaving its socket. The agent's ready signal
# (host vsock port 1025) is what smoke connects on.
# shellcheck shell=sh
. ./lib.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
husk-vmm smoke >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] || { cat "$tmp/err" >&2; fail "husk-vmm smoke exited $rc"; }
[ "$(wc -l <"$tmp/out")" -eq 1 ] || fail "smoke printed $(wc -l <"$tmp/out") lines, want 1: $(cat "$tmp/out")"
grep -Eqx 'agent [0-9]+\.[0-9]+\.[0-9]+[^ ]* ready in [0-9]+ ms' "$tmp/out" || fail "smoke line malformed: $(cat "$tmp/out")"
note "1 vCPU: $(cat "$tmp/out")"
# The agent announced itself on host port 1025 (<uds>_1025) and smoke
# connected only then, not by polling.
grep -q '^agent reached after its ready signal$' "$tmp/err" || fail "agent not reached through its ready signal: $(grep '^agent reached' "$tmp/err")"
grep -q '"vcpus":1[,}]' "$tmp/err" || fail "agent did not report 1 vCPU: $(grep ping: "$tmp/err")"

husk-vmm smoke --vcpus 2 --memory 256 >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] || { cat "$tmp/err" >&2; fail "husk-vmm smoke --vcpus 2 exited $rc"; }
grep -q '"vcpus":2[,}]' "$tmp/err" || fail "agent did not report 2 vCPUs: $(grep ping: "$tmp/err")"
mem=$(grep -o '"mem_total_kib":[0-9]*' "$tmp/err" | cut -d: -f2)
{ [ "${mem:-0}" -gt 150000 ] && [ "$mem" -le 262144 ]; } || fail "guest MemTotal $mem KiB does not fit --memory 256"
note "2 vCPUs, 256 MiB: $(cat "$tmp/out"); guest MemTotal $mem KiB"

HUSK_VMM_TIMING=1 husk-vmm run --startup-only --vcpus 2 --vsock-uds "$tmp/s.sock" \
    --serial stdout >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 0 ] || { cat "$tmp/err" >&2; fail "husk-vmm run --startup-only exited $rc"; }
grep -q 'timing: .* first KVM_RUN$' "$tmp/err" || fail "no first KVM_RUN timing line: $(tail -n 3 "$tmp/err")"
[ ! -s "$tmp/out" ] || fail "guest console output with --startup-only (a guest ran?): $(head -n 3 "$tmp/out")"
[ ! -e "$tmp/s.sock" ] || fail "--startup-only left its vsock socket behind"
note "--startup-only: $(grep 'first KVM_RUN' "$tmp/err" | sed 's/husk-vmm: timing: *//')"
no_leftovers
