use super::allowlist::{ioctls, rules};
use super::*;

use std::process::Command;

fn has(kind: ThreadKind, nr: i64) -> bool {
    rules(kind, 1, &[]).unwrap().contains_key(&nr)
}

#[test]
fn every_filter_compiles_to_bpf_for_x86_64() {
    for kind in ThreadKind::ALL {
        for action in [SeccompAction::Trap, SeccompAction::Log] {
            let prog = compile(kind, std::process::id(), action).unwrap();
            // Non-empty, and within the kernel's BPF_MAXINSNS.
            assert!(!prog.is_empty(), "{kind:?}");
            assert!(prog.len() < 4096, "{kind:?}: {} instructions", prog.len());
        }
    }
}

#[test]
fn no_thread_may_spawn_exec_open_or_trace() {
    for kind in ThreadKind::ALL {
        for nr in [
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_prctl,
            libc::SYS_seccomp,
            libc::SYS_capset,
            libc::SYS_setuid,
            libc::SYS_bpf,
            libc::SYS_process_vm_writev,
            libc::SYS_memfd_create,
            libc::SYS_kill,
            libc::SYS_bind,
            libc::SYS_listen,
        ] {
            assert!(!has(kind, nr), "{kind:?} allows syscall {nr}");
        }
    }
}

#[test]
fn only_vcpus_may_run_a_vcpu_and_only_main_connects_out() {
    let has_ioctl = |kind, req| {
        rules(kind, 1, &[])
            .unwrap()
            .get(&libc::SYS_ioctl)
            .is_some_and(|v| {
                let want = format!("value: {req}");
                v.iter().any(|r| format!("{r:?}").contains(&want))
            })
    };
    assert!(has_ioctl(ThreadKind::Vcpu, ioctls::KVM_RUN));
    for kind in [
        ThreadKind::Main,
        ThreadKind::FsWorker,
        ThreadKind::SmokeClient,
    ] {
        assert!(!has_ioctl(kind, ioctls::KVM_RUN), "{kind:?}");
    }
    assert!(has(ThreadKind::Main, libc::SYS_connect));
    assert!(has(ThreadKind::Main, libc::SYS_epoll_wait));
    assert!(!has(ThreadKind::Vcpu, libc::SYS_connect));
    assert!(!has(ThreadKind::FsWorker, libc::SYS_connect));
    assert!(!has(ThreadKind::Vcpu, libc::SYS_socket));
    // Every thread can report a violation and end the process.
    for kind in ThreadKind::ALL {
        assert!(has(kind, libc::SYS_write) && has(kind, libc::SYS_exit_group));
    }
}

#[test]
fn modes() {
    let m = |flag, env| Mode::from_flag_and_env(flag, env).unwrap();
    assert_eq!(m(false, None), Mode::Enforce);
    assert_eq!(m(false, Some("on")), Mode::Enforce);
    assert_eq!(m(true, None), Mode::Off);
    assert_eq!(m(true, Some("log")), Mode::Off);
    assert_eq!(m(false, Some("off")), Mode::Off);
    assert_eq!(m(false, Some("log")), Mode::Log);
    assert!(Mode::from_flag_and_env(false, Some("maybe")).is_err());
}

#[test]
fn violation_line_formats() {
    let mut l = Line::default();
    l.push(b"nr ");
    l.push_int(0);
    l.push(b" ");
    l.push_int(-12);
    l.push(b" ");
    l.push_int(435);
    assert_eq!(l.bytes(), b"nr 0 -12 435");
    let mut full = Line::default();
    full.push(&[b'x'; 200]);
    assert_eq!(full.bytes().len(), 128);
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn privileges_are_dropped_for_the_thread() {
    // Capabilities and no_new_privs are per thread: only this one changes.
    std::thread::spawn(|| {
        drop_privileges().unwrap();
        // Again: a thread without capabilities succeeds too.
        drop_privileges().unwrap();
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        for key in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(status_field(&s, key), "0000000000000000", "{key}");
        }
        assert_eq!(status_field(&s, "NoNewPrivs:"), "1");
    })
    .join()
    .unwrap();
}

const CHILD_ENV: &str = "HUSK_CONFINE_TEST_CHILD";

/// Run by [`a_violation_ends_the_process_with_a_clear_line`] in a child
/// process (a no-op otherwise): confines this thread with the real filter,
/// does what any thread does, then one forbidden syscall.
#[test]
fn violation_child() {
    let Ok(kind) = std::env::var(CHILD_ENV) else {
        return;
    };
    let kind = ThreadKind::ALL
        .into_iter()
        .find(|k| k.name() == kind)
        .unwrap();
    set_mode(Mode::Enforce);
    confine_thread(kind, &format!("test-{}", kind.name())).unwrap();
    // Allowed everywhere: allocation, locks, clocks, sleeps, hashing.
    let v: Vec<u8> = vec![1; 8 << 20];
    let m = std::sync::Mutex::new(v.len());
    let t = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(1));
    let h: std::collections::HashMap<u32, u32> = [(1, 2)].into_iter().collect();
    eprintln!(
        "survived: {} {} {:?}",
        *m.lock().unwrap(),
        h.len(),
        t.elapsed() > std::time::Duration::ZERO
    );
    drop(v);
    // SAFETY: socket(2) with constant arguments; it never returns here.
    unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    eprintln!("not reached");
}

#[test]
fn a_violation_ends_the_process_with_a_clear_line() {
    let exe = std::env::current_exe().unwrap();
    for kind in ThreadKind::ALL {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "confine::tests::violation_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, kind.name())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(VIOLATION_EXIT), "{kind:?}: {err}");
        assert!(err.contains("survived: 8388608 1 true"), "{kind:?}: {err}");
        let line = format!(
            "husk-vmm: seccomp: thread test-{} made syscall {} outside its allowlist\n",
            kind.name(),
            libc::SYS_socket
        );
        assert!(err.contains(&line), "{kind:?}: {err}");
        assert!(!err.contains("not reached"), "{kind:?}: {err}");
    }
}
