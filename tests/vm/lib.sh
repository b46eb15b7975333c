# Helpers for VM tests (tests/vm/t-*.sh). They run where VMs boot: inside the
# lab's L1 machine, or directly on a hardware KVM host (tests/lab/run decides).
# A test prints what it measured and exits 0 on success; `fail` ends it.
# shellcheck shell=sh
fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "    $*"; }
# now_ms: monotonic clock in milliseconds (10 ms resolution; busybox date has no %N)
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# expect_in FILE PATTERN WHAT: fail unless FILE has a line matching PATTERN
expect_in() { grep -q -- "$2" "$1" || { echo "--- $1:" >&2; tail -n 20 "$1" >&2; fail "$3"; }; }
# assert_eq GOT WANT WHAT
assert_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }
: "${HUSK_KERNEL:?HUSK_KERNEL unset: run VM tests through tests/lab/run}"
