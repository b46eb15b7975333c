//! The spec's seccomp filter, compiled to classic BPF for x86_64.
//!
//! OCI semantics: the rules are tried in order and the first one whose
//! syscall and argument conditions match decides the action; a call no rule
//! matches gets `defaultAction`. A single filter with per-rule actions keeps
//! exactly that (seccompiler's model has one match action per filter, so
//! mixed actions would need stacked filters, whose precedence-based result
//! differs from first-match). Argument comparisons are 64-bit, like
//! libseccomp's. Calls of another architecture (i386, x32) are killed.

use std::io;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};
use serde::{Deserialize, Serialize};

use super::error::SpecError;
use super::syscall_table::SYSCALLS;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// The errno of SCMP_ACT_ERRNO without `errnoRet`.
const EPERM: u32 = 1;
// seccomp(2) filter flags (linux/seccomp.h), as the u32 of `Filter::flags`.
const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// Offsets of the low and high words of argument `i` (0..=5) in
/// `struct seccomp_data`.
fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
fn off_arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

/// The high and the low 32 bits of `v`.
fn hi_lo(v: u64) -> (u32, u32) {
    let hi = u32::try_from(v >> 32).unwrap_or(u32::MAX);
    let lo = u32::try_from(v & 0xffff_ffff).unwrap_or(u32::MAX);
    (hi, lo)
}

/// One BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A compiled filter and its seccomp(2) flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub insns: Vec<Insn>,
    pub flags: u32,
}

/// Syscall number of `name` on x86_64.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| SYSCALLS[i].1)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<u32, SpecError> {
    let data = errno.unwrap_or(EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActErrno => {
            if data > 0xffff {
                return Err(SpecError::invalid(
                    field,
                    format!("errno {data} out of range"),
                ));
            }
            RET_ERRNO | data
        }
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | (data & 0xffff),
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SpecError::invalid(
                field,
                "SCMP_ACT_NOTIFY is not supported (no seccomp agent in the guest)",
            ))
        }
    })
}

/// Where a conditional jump goes.
#[derive(Clone, Copy)]
enum To {
    /// The next instruction.
    Fall,
    /// The end of the current argument condition (it matched).
    Pass,
    /// The next rule (this rule does not match).
    Fail,
}

struct Sym {
    code: u16,
    jt: To,
    jf: To,
    k: u32,
}

fn ld(k: u32) -> Sym {
    Sym {
        code: LD_W_ABS,
        jt: To::Fall,
        jf: To::Fall,
        k,
    }
}
fn j(code: u16, k: u32, jt: To, jf: To) -> Sym {
    Sym { code, jt, jf, k }
}

/// Code for one 64-bit argument comparison; falls through (or jumps to
/// `Pass`) when it holds, jumps to `Fail` when not.
fn arg_cond(idx: u32, op: LinuxSeccompOperator, v: u64, v2: u64) -> Vec<Sym> {
    let (hi, lo) = hi_lo(v);
    let (lh, ll) = (ld(off_arg_hi(idx)), ld(off_arg_lo(idx)));
    use To::*;
    match op {
        LinuxSeccompOperator::ScmpCmpEq => {
            vec![lh, j(JEQ_K, hi, Fall, Fail), ll, j(JEQ_K, lo, Fall, Fail)]
        }
        LinuxSeccompOperator::ScmpCmpNe => {
            vec![lh, j(JEQ_K, hi, Fall, Pass), ll, j(JEQ_K, lo, Fail, Fall)]
        }
        LinuxSeccompOperator::ScmpCmpGt => vec![
            lh,
            j(JGT_K, hi, Pass, Fall),
            j(JEQ_K, hi, Fall, Fail),
            ll,
            j(JGT_K, lo, Fall, Fail),
        ],
        LinuxSeccompOperator::ScmpCmpGe => vec![
            lh,
            j(JGT_K, hi, Pass, Fall),
            j(JEQ_K, hi, Fall, Fail),
            ll,
            j(JGE_K, lo, Fall, Fail),
        ],
        LinuxSeccompOperator::ScmpCmpLt => vec![
            lh,
            j(JGT_K, hi, Fail, Fall),
            j(JEQ_K, hi, Fall, Pass),
            ll,
            j(JGE_K, lo, Fail, Fall),
        ],
        LinuxSeccompOperator::ScmpCmpLe => vec![
            lh,
            j(JGT_K, hi, Fail, Fall),
            j(JEQ_K, hi, Fall, Pass),
            ll,
            j(JGT_K, lo, Fail, Fall),
        ],
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (vh, vl) = hi_lo(v2);
            vec![
                lh,
                j(AND_K, hi, Fall, Fall),
                j(JEQ_K, vh, Fall, Fail),
                ll,
                j(AND_K, lo, Fall, Fall),
                j(JEQ_K, vl, Fall, Fail),
            ]
        }
    }
}

fn off(from: usize, to: usize, field: &str) -> Result<u8, SpecError> {
    u8::try_from(to - from - 1)
        .map_err(|_| SpecError::invalid(field, "rule too long for a BPF jump"))
}

fn too_long(f: &str) -> SpecError {
    SpecError::invalid(
        f,
        format!("filter needs more than {MAX_INSNS} BPF instructions"),
    )
}

/// Compiles `linux.seccomp`. Unknown syscall names are skipped and reported
/// in `warnings` (as runc does: profiles list calls of every architecture).
pub fn compile(s: &LinuxSeccomp, warnings: &mut Vec<String>) -> Result<Filter, SpecError> {
    let f = "linux.seccomp";
    if s.listener_path().is_some() {
        return Err(SpecError::invalid(
            format!("{f}.listenerPath"),
            "seccomp user notification is not supported",
        ));
    }
    let default = action(
        s.default_action(),
        s.default_errno_ret(),
        &format!("{f}.defaultAction"),
    )?;
    let flags = filter_flags(s, f, warnings);
    for a in s.architectures().iter().flatten() {
        use oci_spec::runtime::Arch;
        if !matches!(a, Arch::ScmpArchX86_64 | Arch::ScmpArchNative) {
            warnings.push(format!(
                "{f}.architectures: {a:?} ignored: only x86_64 system calls are allowed, others are killed"
            ));
        }
    }
    let insn = |code: u16, jt: u8, jf: u8, k: u32| Insn { code, jt, jf, k };
    // Header: another architecture or the x32 ABI: kill the process.
    let mut out: Vec<Insn> = vec![
        insn(LD_W_ABS, 0, 0, OFF_ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, OFF_NR),
        insn(JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
    ];
    let mut nr_loaded = true;
    for (ri, rule) in s.syscalls().iter().flatten().enumerate() {
        let rf = format!("{f}.syscalls[{ri}]");
        nr_loaded = compile_rule(rule, &rf, nr_loaded, &mut out, warnings)?;
    }
    out.push(insn(RET_K, 0, 0, default));
    if out.len() > MAX_INSNS {
        return Err(too_long(f));
    }
    Ok(Filter { insns: out, flags })
}

/// seccomp(2) flags of `flags`.
fn filter_flags(s: &LinuxSeccomp, f: &str, warnings: &mut Vec<String>) -> u32 {
    use oci_spec::runtime::LinuxSeccompFilterFlag as F;
    let mut flags = 0;
    for (i, fl) in s.flags().iter().flatten().enumerate() {
        match fl {
            F::SeccompFilterFlagLog => flags |= SECCOMP_FILTER_FLAG_LOG,
            F::SeccompFilterFlagSpecAllow => flags |= SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            F::SeccompFilterFlagTsync => flags |= SECCOMP_FILTER_FLAG_TSYNC,
            F::SeccompFilterFlagWaitKillableRecv => warnings.push(format!(
                "{f}.flags[{i}]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV ignored (no notification listener)"
            )),
        }
    }
    flags
}

/// The argument conditions of a rule, shared by every name of it, and
/// where each condition ends.
fn rule_conditions(rule: &LinuxSyscall, rf: &str) -> Result<(Vec<Sym>, Vec<usize>), SpecError> {
    let args = rule.args().as_deref().unwrap_or(&[]);
    if args.len() > 6 {
        return Err(SpecError::invalid(
            format!("{rf}.args"),
            "at most 6 conditions",
        ));
    }
    let mut conds: Vec<Sym> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    for (ai, a) in args.iter().enumerate() {
        let Some(index) = u32::try_from(a.index()).ok().filter(|i| *i <= 5) else {
            return Err(SpecError::invalid(
                format!("{rf}.args[{ai}].index"),
                format!("{} is not an argument index (0-5)", a.index()),
            ));
        };
        // A missing valueTwo is 0, as in runc and libseccomp: Docker's
        // default profile omits it (Go's omitempty) for `(arg & value)
        // == 0` rules such as clone's namespace flags.
        conds.extend(arg_cond(
            index,
            a.op(),
            a.value(),
            a.value_two().unwrap_or(0),
        ));
        ends.push(conds.len());
    }
    Ok((conds, ends))
}

/// Appends the code of one rule (`syscalls[i]`, field `rf`) to `out`;
/// `nr_loaded` says whether the accumulator holds the syscall number on
/// entry; returns whether it does on exit.
fn compile_rule(
    rule: &LinuxSyscall,
    rf: &str,
    mut nr_loaded: bool,
    out: &mut Vec<Insn>,
    warnings: &mut Vec<String>,
) -> Result<bool, SpecError> {
    let act = action(rule.action(), rule.errno_ret(), &format!("{rf}.action"))?;
    let (conds, ends) = rule_conditions(rule, rf)?;
    if rule.names().is_empty() {
        return Err(SpecError::invalid(format!("{rf}.names"), "empty"));
    }
    // Profiles list other architectures' calls (Docker's has ~50 such
    // as "stat64"): one warning per rule, not one per name.
    let unknown: Vec<&str> = rule
        .names()
        .iter()
        .filter(|n| syscall_number(n).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        warnings.push(format!(
            "{rf}.names: {} system call(s) unknown on x86_64 skipped: {}",
            unknown.len(),
            unknown.join(", ")
        ));
    }
    for nr in rule.names().iter().filter_map(|n| syscall_number(n)) {
        if !nr_loaded {
            out.push(Insn {
                code: LD_W_ABS,
                jt: 0,
                jf: 0,
                k: OFF_NR,
            });
        }
        // [jeq nr][conds...][ret act] next:
        let block_len = 1 + conds.len() + 1;
        let base = out.len();
        let fail_at = base + block_len;
        out.push(Insn {
            code: JEQ_K,
            jt: 0,
            jf: off(base, fail_at, rf)?,
            k: nr,
        });
        let mut cond_i = 0;
        for (i, s) in conds.iter().enumerate() {
            while ends[cond_i] <= i {
                cond_i += 1;
            }
            let at = base + 1 + i;
            let pass_at = base + 1 + ends[cond_i];
            let resolve = |t: To| -> Result<u8, SpecError> {
                match t {
                    To::Fall => Ok(0),
                    To::Pass => off(at, pass_at, rf),
                    To::Fail => off(at, fail_at, rf),
                }
            };
            out.push(Insn {
                code: s.code,
                jt: resolve(s.jt)?,
                jf: resolve(s.jf)?,
                k: s.k,
            });
        }
        out.push(Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: act,
        });
        nr_loaded = conds.is_empty();
        if out.len() > MAX_INSNS {
            return Err(too_long("linux.seccomp"));
        }
    }
    Ok(nr_loaded)
}

/// Installs `f` for the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
pub fn install(f: &Filter) -> io::Result<()> {
    let mut prog: Vec<libc::sock_filter> = f
        .insns
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(prog.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, a valid instruction array of `len`
    // entries that outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            f.flags as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A tiny classic-BPF interpreter for the subset [`compile`] emits, to test
/// the generated code without loading it.
#[cfg(test)]
pub fn run(insns: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let i = insns[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => {
                let o = i.k as usize;
                a = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
            }
            AND_K => a &= i.k,
            RET_K => return i.k,
            JEQ_K | JGT_K | JGE_K => {
                let t = match i.code {
                    JEQ_K => a == i.k,
                    JGT_K => a > i.k,
                    _ => a >= i.k,
                };
                pc += if t { i.jt } else { i.jf } as usize;
            }
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_kernel_headers() {
        for (ours, libc) in [
            (SECCOMP_FILTER_FLAG_TSYNC, libc::SECCOMP_FILTER_FLAG_TSYNC),
            (SECCOMP_FILTER_FLAG_LOG, libc::SECCOMP_FILTER_FLAG_LOG),
            (
                SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            ),
        ] {
            assert_eq!(u64::from(ours), libc);
        }
        assert_eq!(i32::try_from(EPERM).unwrap(), libc::EPERM);
    }

    fn filter(json: &str) -> Result<Filter, String> {
        let s: LinuxSeccomp = serde_json::from_str(json).unwrap();
        compile(&s, &mut Vec::new()).map_err(|e| e.to_string())
    }

    const MKDIR: u32 = 83;
    const GETPID: u32 = 39;
    const PERSONALITY: u32 = 135;

    #[test]
    fn table() {
        assert_eq!(syscall_number("read"), Some(0));
        assert_eq!(syscall_number("mkdir"), Some(MKDIR));
        assert_eq!(syscall_number("mseal"), Some(462));
        assert_eq!(syscall_number("nope"), None);
        assert!(SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn first_match_and_default() {
        let f = filter(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                {"names":["mkdir"],"action":"SCMP_ACT_KILL_PROCESS"},
                {"names":["getpid"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let x = AUDIT_ARCH_X86_64;
        assert_eq!(run(&f.insns, MKDIR, x, [0; 6]), RET_ERRNO | 1);
        assert_eq!(run(&f.insns, GETPID, x, [0; 6]), RET_ERRNO | 1); // EPERM
        assert_eq!(run(&f.insns, 0, x, [0; 6]), RET_ALLOW);
        assert_eq!(run(&f.insns, 0, 0x4000_0003, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(
            run(&f.insns, MKDIR | X32_SYSCALL_BIT, x, [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn argument_operators() {
        let x = AUDIT_ARCH_X86_64;
        let big = 0x1_0000_0005u64;
        for (op, v, cases) in [
            (
                "SCMP_CMP_EQ",
                big,
                vec![(big, true), (5, false), (big + 1, false)],
            ),
            (
                "SCMP_CMP_NE",
                big,
                vec![(big, false), (5, true), (0x2_0000_0005, true)],
            ),
            (
                "SCMP_CMP_GT",
                big,
                vec![
                    (big, false),
                    (big + 1, true),
                    (0x2_0000_0000, true),
                    (0xffff_ffff, false),
                ],
            ),
            (
                "SCMP_CMP_GE",
                big,
                vec![(big, true), (big - 1, false), (0x2_0000_0000, true)],
            ),
            (
                "SCMP_CMP_LT",
                big,
                vec![
                    (big, false),
                    (big - 1, true),
                    (0x2_0000_0000, false),
                    (7, true),
                ],
            ),
            (
                "SCMP_CMP_LE",
                big,
                vec![(big, true), (big + 1, false), (0, true)],
            ),
        ] {
            let f = filter(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["personality"],
                "action":"SCMP_ACT_ERRNO","args":[{{"index":0,"value":{v},"op":"{op}"}}]}}]}}"#
            ))
            .unwrap();
            for (arg, hit) in cases {
                let want = if hit { RET_ERRNO | 1 } else { RET_ALLOW };
                assert_eq!(
                    run(&f.insns, PERSONALITY, x, [arg, 0, 0, 0, 0, 0]),
                    want,
                    "{op} {arg:#x}"
                );
            }
        }
        let f = filter(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[{"names":["personality"],
            "action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":255,"valueTwo":8,"op":"SCMP_CMP_MASKED_EQ"},
            {"index":2,"value":3,"op":"SCMP_CMP_EQ"}]},{"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        assert_eq!(
            run(&f.insns, PERSONALITY, x, [0, 0x1308, 3, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(&f.insns, PERSONALITY, x, [0, 0x1309, 3, 0, 0, 0]),
            RET_ERRNO | 38
        );
        assert_eq!(
            run(&f.insns, PERSONALITY, x, [0, 0x1308, 4, 0, 0, 0]),
            RET_ERRNO | 38
        );
        // After a rule with argument loads the next rule reloads the number.
        assert_eq!(run(&f.insns, GETPID, x, [0; 6]), RET_ALLOW);
    }

    #[test]
    fn bad_filters_name_the_field() {
        let e = filter(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).unwrap_err();
        assert!(e.starts_with("linux.seccomp.defaultAction:"), "{e}");
        let e = filter(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":7,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("linux.seccomp.syscalls[0].args[0].index:"),
            "{e}"
        );
        let mut w = Vec::new();
        let s: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["arm_fadvise64_64","read"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let f = compile(&s, &mut w).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(run(&f.insns, 0, AUDIT_ARCH_X86_64, [0; 6]), RET_ERRNO | 1);
    }
}
