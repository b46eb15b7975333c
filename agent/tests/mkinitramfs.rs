//! Tests of agent/mkinitramfs.sh: reproducible output and the expected newc
//! entries, checked with a small newc parser (independent of cpio(1)).

use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mkinitramfs.sh");
const AGENT: &str = env!("CARGO_BIN_EXE_husk-agent");

#[derive(Debug)]
struct Entry {
    name: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: Vec<u8>,
}

fn hex(b: &[u8]) -> u32 {
    u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap()
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses an uncompressed newc archive up to its TRAILER!!!.
fn parse_newc(img: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        let h = &img[off..off + 110];
        assert_eq!(&h[..6], b"070701", "newc magic at offset {off}");
        let f = |i: usize| hex(&h[6 + i * 8..14 + i * 8]);
        let (mode, uid, gid, mtime, size) = (f(1), f(2), f(3), f(5), f(6) as usize);
        let rdev = (f(9), f(10));
        let namesize = f(11) as usize;
        let name_start = off + 110;
        let name = std::str::from_utf8(&img[name_start..name_start + namesize - 1])
            .unwrap()
            .to_string();
        assert_eq!(img[name_start + namesize - 1], 0);
        let data_start = pad4(name_start + namesize);
        let data = img[data_start..data_start + size].to_vec();
        off = pad4(data_start + size);
        if name == "TRAILER!!!" {
            return out;
        }
        out.push(Entry {
            name,
            mode,
            uid,
            gid,
            mtime,
            rdev,
            data,
        });
    }
}

fn skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let cpio = Command::new("cpio").arg("--version").output().is_ok();
    if !root || !cpio {
        eprintln!("skipped: needs root and cpio");
    }
    !root || !cpio
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("husk-mkinitramfs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn build(out: &Path, extra: &[&str], epoch: Option<&str>) -> std::process::Output {
    let mut c = Command::new(SCRIPT);
    c.arg(AGENT).arg(out).args(extra);
    c.env_remove("SOURCE_DATE_EPOCH");
    if let Some(e) = epoch {
        c.env("SOURCE_DATE_EPOCH", e);
    }
    c.output().unwrap()
}

fn ok(o: std::process::Output) {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "must print nothing on success"
    );
}

#[test]
fn reproducible_with_expected_entries() {
    if skip() {
        return;
    }
    let d = tmpdir("basic");
    let (a, b) = (d.join("a.img"), d.join("b.img"));
    ok(build(&a, &[], None));
    ok(build(&b, &[], None));
    let img = std::fs::read(&a).unwrap();
    assert_eq!(
        img,
        std::fs::read(&b).unwrap(),
        "same input, different output"
    );

    let entries = parse_newc(&img);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "dev",
            "dev/console",
            "dev/null",
            "etc",
            "init",
            "proc",
            "run",
            "sys",
            "tmp"
        ]
    );
    for e in &entries {
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{}", e.name);
    }
    let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
    let init = get("init");
    assert_eq!(init.mode, 0o100755);
    assert_eq!(init.data, std::fs::read(AGENT).unwrap());
    assert_eq!(
        (get("dev/console").mode & 0o170000, get("dev/console").rdev),
        (0o020000, (5, 1))
    );
    assert_eq!(
        (get("dev/null").mode & 0o170000, get("dev/null").rdev),
        (0o020000, (1, 3))
    );
    assert_eq!(get("proc").mode, 0o040755);
    assert_eq!(get("tmp").mode, 0o041777);

    // SOURCE_DATE_EPOCH sets every mtime.
    let c = d.join("c.img");
    ok(build(&c, &[], Some("1700000000")));
    assert!(parse_newc(&std::fs::read(&c).unwrap())
        .iter()
        .all(|e| e.mtime == 1_700_000_000));
    // No temporary files left next to the output.
    let mut left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["a.img", "b.img", "c.img"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn busybox_variant() {
    if skip() || !Path::new("/bin/busybox").exists() {
        eprintln!("skipped: needs /bin/busybox");
        return;
    }
    let d = tmpdir("busybox");
    let (a, b) = (d.join("a.img"), d.join("b.img"));
    ok(build(&a, &["--busybox"], None));
    ok(build(&b, &["--busybox"], None));
    let img = std::fs::read(&a).unwrap();
    assert_eq!(img, std::fs::read(&b).unwrap());
    let entries = parse_newc(&img);
    let get = |n: &str| {
        entries
            .iter()
            .find(|e| e.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert_eq!(get("bin/busybox").mode, 0o100755);
    assert_eq!(
        get("bin/busybox").data,
        std::fs::read("/bin/busybox").unwrap()
    );
    let sh = get("bin/sh");
    assert_eq!(sh.mode & 0o170000, 0o120000);
    assert_eq!(sh.data, b"/bin/busybox");
    get("init");
    assert!(entries.iter().all(|e| e.name != "linuxrc"));
    // Every entry's parent directory comes before it.
    for (i, e) in entries.iter().enumerate() {
        if let Some((parent, _)) = e.name.rsplit_once('/') {
            assert!(
                entries[..i].iter().any(|p| p.name == parent),
                "{} before its parent",
                e.name
            );
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn clear_errors() {
    let d = tmpdir("errors");
    let run = |args: &[&str]| {
        let o = Command::new(SCRIPT).args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?} should fail");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
        err
    };
    assert!(run(&[]).contains("usage"));
    assert!(run(&["/nonexistent/agent", "/tmp/x"]).contains("/nonexistent/agent"));
    let out = d.join("nodir/out.img");
    assert!(run(&[AGENT, out.to_str().unwrap()]).contains("does not exist"));
    assert!(run(&[AGENT, "x", "--bogus"]).contains("--bogus"));
    assert!(!out.exists());
    // Not root: refused with a clear message (setpriv drops to nobody).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && Command::new("setpriv").arg("--version").output().is_ok()
    {
        let out = d.join("nobody.img");
        let o = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                SCRIPT,
                AGENT,
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8(o.stderr).unwrap();
        assert!(err.contains("must run as root"), "{err}");
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&d).unwrap();
}
