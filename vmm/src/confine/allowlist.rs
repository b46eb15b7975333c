//! The per-thread syscall allowlists (x86_64, a static glibc build).
//!
//! Every thread gets [`common`]: memory (no executable mappings), futexes,
//! clocks and sleeps, reads and writes on the descriptors it already has,
//! signal return, thread and process exit, `tgkill` within this process.
//! Then, per thread:
//!
//! * vCPU: `ioctl` `KVM_RUN` (and the register reads of an error report),
//!   plus what device emulation does on MMIO/PIO exits: virtio activation
//!   and reset (vhost-net's and the tap's ioctls, vsock connections shut
//!   down), the serial console file (truncated when full).
//! * main (event loop): epoll, the vsock device's host side (accept,
//!   `socket(AF_UNIX)` + `connect` for guest-initiated connections, send,
//!   receive, shutdown), virtio-blk I/O, virtio-net's tap and vhost-net
//!   resets, stopping the vCPUs (`tgkill`), removing the vsock socket.
//! * virtio-fs worker: the vhost-user conversation with virtiofsd over its
//!   connected socket (`sendmsg`/`recvmsg` with descriptors, `poll`).
//! * smoke client (`husk-vmm smoke` only): a host client of the agent,
//!   `socket(AF_UNIX)`, `connect`, timeouts, its ready socket.
//!
//! No thread may `clone`, `execve`, `open`, `mount`, `ptrace`, create new
//! non-Unix sockets, or make any ioctl not listed.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond,
    SeccompRule,
};

/// A thread that confines itself; one allowlist each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    Vcpu,
    Main,
    FsWorker,
    SmokeClient,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 4] = [
        ThreadKind::Vcpu,
        ThreadKind::Main,
        ThreadKind::FsWorker,
        ThreadKind::SmokeClient,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Main => "main",
            ThreadKind::FsWorker => "virtio-fs worker",
            ThreadKind::SmokeClient => "smoke client",
        }
    }
}

/// ioctl request numbers (x86_64), from linux/kvm.h, vhost.h, if_tun.h.
pub mod ioctls {
    pub const KVM_RUN: u64 = 0xae80;
    pub const KVM_GET_REGS: u64 = 0x8090_ae81;
    pub const KVM_GET_SREGS: u64 = 0x8138_ae83;
    pub const VHOST_GET_FEATURES: u64 = 0x8008_af00;
    pub const VHOST_SET_FEATURES: u64 = 0x4008_af00;
    pub const VHOST_SET_MEM_TABLE: u64 = 0x4008_af03;
    pub const VHOST_SET_VRING_NUM: u64 = 0x4008_af10;
    pub const VHOST_SET_VRING_ADDR: u64 = 0x4028_af11;
    pub const VHOST_SET_VRING_BASE: u64 = 0x4008_af12;
    pub const VHOST_GET_VRING_BASE: u64 = 0xc008_af12;
    pub const VHOST_SET_VRING_KICK: u64 = 0x4008_af20;
    pub const VHOST_SET_VRING_CALL: u64 = 0x4008_af21;
    pub const VHOST_NET_SET_BACKEND: u64 = 0x4008_af30;
    pub const TUNSETOFFLOAD: u64 = 0x4004_54d0;
    pub const FIONBIO: u64 = 0x5421;
    pub const FIOCLEX: u64 = 0x5451;

    /// What starting, resetting or dropping a vhost-net device and
    /// setting the tap's offloads take (vCPU thread on activation and
    /// reset, main thread on teardown).
    pub const NET_DEVICE: [u64; 12] = [
        VHOST_GET_FEATURES,
        VHOST_SET_FEATURES,
        VHOST_SET_MEM_TABLE,
        VHOST_SET_VRING_NUM,
        VHOST_SET_VRING_ADDR,
        VHOST_SET_VRING_BASE,
        VHOST_GET_VRING_BASE,
        VHOST_SET_VRING_KICK,
        VHOST_SET_VRING_CALL,
        VHOST_NET_SET_BACKEND,
        TUNSETOFFLOAD,
        FIONBIO,
    ];
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// The rules of `kind`'s allowlist; `pid` is this process (`tgkill`'s
/// first argument), `paths` the addresses of the paths the main thread may
/// `lstat` and remove ([`super::paths`]).
pub fn rules(kind: ThreadKind, pid: u32, paths: &[u64]) -> Result<Rules, BackendError> {
    let mut r = Rules::new();
    common(&mut r, pid)?;
    match kind {
        ThreadKind::Vcpu => vcpu(&mut r)?,
        ThreadKind::Main => main_thread(&mut r, paths)?,
        ThreadKind::FsWorker => fs_worker(&mut r),
        ThreadKind::SmokeClient => smoke_client(&mut r)?,
    }
    Ok(r)
}

/// Talking over a connected socket (vsock's Unix sockets, vhost-user).
const CONNECTED_SOCKET: [i64; 5] = [
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
];

fn allow(r: &mut Rules, syscalls: &[i64]) {
    for &nr in syscalls {
        // No rules: allowed whatever the arguments. Replaces any
        // conditional rules an earlier group set.
        r.insert(nr, Vec::new());
    }
}

/// Adds a rule (conditions that must all hold) for `nr`, unless `nr` is
/// already allowed unconditionally.
fn allow_if(r: &mut Rules, nr: i64, conds: Vec<Cond>) -> Result<(), BackendError> {
    let rule = SeccompRule::new(conds)?;
    match r.get_mut(&nr) {
        Some(v) if v.is_empty() => {}
        Some(v) => v.push(rule),
        None => {
            r.insert(nr, vec![rule]);
        }
    }
    Ok(())
}

fn arg_eq(index: u8, len: Len, value: u64) -> Result<Cond, BackendError> {
    Cond::new(index, len, Op::Eq, value)
}

/// `ioctl(fd, request, ...)` for each request in `requests`.
fn allow_ioctls(r: &mut Rules, requests: &[u64]) -> Result<(), BackendError> {
    for &req in requests {
        allow_if(r, libc::SYS_ioctl, vec![arg_eq(1, Len::Dword, req)?])?;
    }
    Ok(())
}

/// `fcntl` with the commands std and the devices use on descriptors they
/// have (flags, close-on-exec, `try_clone`).
fn allow_fcntl(r: &mut Rules) -> Result<(), BackendError> {
    for cmd in [
        libc::F_GETFD,
        libc::F_SETFD,
        libc::F_GETFL,
        libc::F_SETFL,
        libc::F_DUPFD_CLOEXEC,
    ] {
        let cmd = u64::try_from(cmd).unwrap_or(u64::MAX);
        allow_if(r, libc::SYS_fcntl, vec![arg_eq(1, Len::Dword, cmd)?])?;
    }
    Ok(())
}

/// `socket(AF_UNIX, ...)` only.
fn allow_unix_socket(r: &mut Rules) -> Result<(), BackendError> {
    let unix = u64::try_from(libc::AF_UNIX).unwrap_or(u64::MAX);
    allow_if(r, libc::SYS_socket, vec![arg_eq(0, Len::Dword, unix)?])
}

/// What every confined thread may do.
fn common(r: &mut Rules, pid: u32) -> Result<(), BackendError> {
    allow(
        r,
        &[
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_close,
            libc::SYS_futex,
            libc::SYS_sched_yield,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_madvise,
            libc::SYS_brk,
            libc::SYS_rt_sigreturn,
            libc::SYS_rt_sigprocmask,
            libc::SYS_sigaltstack,
            libc::SYS_restart_syscall,
            libc::SYS_clock_gettime,
            libc::SYS_clock_getres,
            libc::SYS_gettimeofday,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_getpid,
            libc::SYS_gettid,
            libc::SYS_getrandom,
            // glibc's malloc sizes its arenas by the CPUs it may run on.
            libc::SYS_sched_getaffinity,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ],
    );
    // Mappings (glibc's malloc changes protections when it grows a thread's
    // arena), but nothing may become executable.
    let exec = u64::try_from(libc::PROT_EXEC).unwrap_or(0);
    for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
        allow_if(
            r,
            nr,
            vec![Cond::new(2, Len::Dword, Op::MaskedEq(exec), 0)?],
        )?;
    }
    // Signals within this process only (pthread_kill, abort).
    allow_if(
        r,
        libc::SYS_tgkill,
        vec![arg_eq(0, Len::Dword, u64::from(pid))?],
    )?;
    allow_fcntl(r)?;
    allow_ioctls(r, &[ioctls::FIONBIO, ioctls::FIOCLEX])
}

fn vcpu(r: &mut Rules) -> Result<(), BackendError> {
    allow_ioctls(
        r,
        &[ioctls::KVM_RUN, ioctls::KVM_GET_REGS, ioctls::KVM_GET_SREGS],
    )?;
    allow_ioctls(r, &ioctls::NET_DEVICE)?;
    allow(
        r,
        &[
            // The serial console file, emptied when it reaches its cap.
            libc::SYS_lseek,
            libc::SYS_ftruncate,
            // Device resets: vsock connections and their timer, the
            // virtio-fs socket.
            libc::SYS_timerfd_settime,
            libc::SYS_timerfd_gettime,
            libc::SYS_shutdown,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
            libc::SYS_poll,
            libc::SYS_ppoll,
        ],
    );
    Ok(())
}

/// `lstat`, `unlink` and `rmdir` on the registered paths only (by address:
/// glibc's wrappers make the plain or the `*at` syscall).
fn allow_registered_paths(r: &mut Rules, paths: &[u64]) -> Result<(), BackendError> {
    let cwd = u64::from(libc::AT_FDCWD.cast_unsigned());
    for &p in paths {
        for nr in [libc::SYS_unlink, libc::SYS_rmdir, libc::SYS_lstat] {
            allow_if(r, nr, vec![arg_eq(0, Len::Qword, p)?])?;
        }
        for nr in [libc::SYS_unlinkat, libc::SYS_newfstatat] {
            allow_if(
                r,
                nr,
                vec![arg_eq(0, Len::Dword, cwd)?, arg_eq(1, Len::Qword, p)?],
            )?;
        }
    }
    Ok(())
}

fn main_thread(r: &mut Rules, paths: &[u64]) -> Result<(), BackendError> {
    allow(r, &CONNECTED_SOCKET);
    allow(
        r,
        &[
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            // vsock's connection timer.
            libc::SYS_timerfd_settime,
            libc::SYS_timerfd_gettime,
            libc::SYS_poll,
            libc::SYS_ppoll,
            // vsock: host connections in, guest-initiated ones out.
            libc::SYS_accept,
            libc::SYS_accept4,
            libc::SYS_connect,
            libc::SYS_getsockopt,
            // virtio-blk.
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_preadv,
            libc::SYS_pwritev,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            // The serial console file (flushed at the end).
            libc::SYS_lseek,
            libc::SYS_ftruncate,
        ],
    );
    // The vsock socket, removed when the VM ends.
    allow_registered_paths(r, paths)?;
    allow_unix_socket(r)?;
    allow_ioctls(r, &ioctls::NET_DEVICE)
}

fn fs_worker(r: &mut Rules) {
    allow(r, &CONNECTED_SOCKET);
    allow(r, &[libc::SYS_poll, libc::SYS_ppoll]);
}

fn smoke_client(r: &mut Rules) -> Result<(), BackendError> {
    allow(r, &CONNECTED_SOCKET);
    allow(
        r,
        &[
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_accept,
            libc::SYS_accept4,
            libc::SYS_connect,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
        ],
    );
    allow_unix_socket(r)
}
