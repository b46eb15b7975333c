# Bad input and guest failures give a one-line error and a non-zero exit,
# never a hang.
# shellcheck shell=sh
. ./lib.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
one_line_error() {  # WHAT PATTERN CMD...: CMD fails, stderr is one line matching PATTERN
    _what=$1 _pat=$2; shift 2
    timeout 60 "$@" >"$tmp/out" 2>"$tmp/err"; _rc=$?
    { [ $_rc -ne 0 ] && [ $_rc -ne 124 ]; } || fail "$_what: exit $_rc"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || { cat "$tmp/err" >&2; fail "$_what: want a one-line error, got $(wc -l <"$tmp/err") lines"; }
    grep -q -- "$_pat" "$tmp/err" || fail "$_what: error does not mention '$_pat': $(cat "$tmp/err")"
    note "$_what -> exit $_rc: $(cat "$tmp/err")"
}
one_line_error "missing kernel" "$tmp/nope" husk-vmm run --kernel "$tmp/nope"
head -c 2000000 /dev/urandom >"$tmp/corrupt"
one_line_error "corrupt kernel" "$tmp/corrupt" husk-vmm run --kernel "$tmp/corrupt"
printf '\177ELF' >"$tmp/trunc"; head -c 100 /dev/zero >>"$tmp/trunc"
one_line_error "truncated ELF kernel" "$tmp/trunc" husk-vmm run --kernel "$tmp/trunc"
one_line_error "memory too small" memory husk-vmm run --memory 16
one_line_error "missing initrd" "$tmp/nope.img" husk-vmm run --initrd "$tmp/nope.img"

# A guest kernel panic (init exits) ends husk-vmm non-zero with the console tail.
mk_initramfs "$tmp/panic.img" <<'INIT'
echo "PANIC-TEST about to exit init"
exit 3
INIT
timeout 120 husk-vmm run --initrd "$tmp/panic.img" --serial none >/dev/null 2>"$tmp/err"; rc=$?
{ [ $rc -ne 0 ] && [ $rc -ne 124 ]; } || fail "guest panic: husk-vmm exit $rc"
grep -q 'Kernel panic' "$tmp/err" || { cat "$tmp/err" >&2; fail "guest panic: no console tail with the panic in the error"; }
note "guest panic -> exit $rc with the console tail"
no_leftovers
