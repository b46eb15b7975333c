//! A real cgroup, made, joined and removed under a test parent in
//! /sys/fs/cgroup: runs as root on a cgroup v2 host (the lab's L1), and
//! says why it skips elsewhere.

use super::*;
use std::process::Command;

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap()
}

#[test]
fn a_real_cgroup_is_made_joined_limited_and_removed() {
    let root = Path::new(ROOT);
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 || !unified(root) {
        eprintln!("skipped: needs root and cgroup v2 at {ROOT}");
        return;
    }
    let parent = format!("husk-test-{}", std::process::id());
    if let Err(e) = std::fs::create_dir(root.join(&parent)) {
        eprintln!("skipped: {ROOT} is not writable here: {e}");
        return;
    }
    let state = std::env::temp_dir().join(format!("husk-cg-state-{}", std::process::id()));
    std::fs::create_dir_all(&state).unwrap();
    let before = cgroup_of(std::process::id());
    let rel = format!("/{parent}/c1");
    let limits = Limits {
        memory_max: Some(8 << 30),
        pids_max: Some(4096),
        cpu_max: Some((250_000, 100_000)),
        cpu_weight: Some(39),
    };
    let j = join(root, &rel, &limits, &state).unwrap().unwrap();
    let dir = root.join(&rel[1..]);
    assert_eq!(j.dir, dir);
    assert_eq!(cgroup_of(std::process::id()), rel);
    let rd = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(rd("memory.max").trim(), (8u64 << 30).to_string());
    assert_eq!(rd("pids.max").trim(), "4096");
    assert_eq!(rd("cpu.max").trim(), "250000 100000");
    assert_eq!(rd("cpu.weight").trim(), "39");
    // A leaf: nothing enabled below it. Its parent enables what it needs.
    assert_eq!(rd("cgroup.subtree_control").trim(), "");
    let sub = std::fs::read_to_string(root.join(&parent).join("cgroup.subtree_control")).unwrap();
    assert!(
        sub.contains("memory") && sub.contains("pids"),
        "parent's subtree_control: {sub}"
    );
    // Children inherit it.
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    assert_eq!(cgroup_of(child.id()), rel);
    // Another container cannot take a cgroup in use.
    let e = create(root, &rel).unwrap_err();
    assert!(matches!(e, CgroupError::InUse { .. }), "{e}");
    assert!(
        std::fs::read_to_string(state.join(RECORD))
            .unwrap()
            .ends_with(&rel),
        "recorded"
    );
    // Leaving kills what is left (the child) and removes the cgroup.
    j.leave().unwrap();
    let _ = child.wait();
    assert_eq!(cgroup_of(std::process::id()), before);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!state.join(RECORD).exists());

    // delete's removal: a recorded cgroup with a straggler, killed.
    std::fs::create_dir(&dir).unwrap();
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
    std::fs::write(state.join(RECORD), dir.to_str().unwrap()).unwrap();
    remove_recorded(&state, true).unwrap();
    let _ = child.wait();
    assert!(!dir.exists());
    std::fs::remove_dir(root.join(&parent)).unwrap();
    std::fs::remove_dir_all(&state).unwrap();
}

#[test]
fn a_host_without_the_unified_hierarchy_is_skipped() {
    let d = std::env::temp_dir().join(format!("husk-cg-v1-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    assert!(join(&d, "/x", &Limits::default(), &d).unwrap().is_none());
    assert!(!d.join("x").exists());
    std::fs::remove_dir_all(&d).unwrap();
}
