use super::*;

const DOCKER: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
400 22 0:50 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/TOP:/var/lib/docker/overlay2/l/BASE,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work
";

#[test]
fn a_docker_rootfs_gives_its_layers_top_first() {
    let o = parse_overlay(DOCKER, Path::new("/var/lib/docker/overlay2/abc/merged")).unwrap();
    assert_eq!(
        o.lower,
        [
            PathBuf::from("/var/lib/docker/overlay2/l/TOP"),
            PathBuf::from("/var/lib/docker/overlay2/l/BASE")
        ]
    );
    assert_eq!(
        o.upper.unwrap(),
        Path::new("/var/lib/docker/overlay2/abc/diff")
    );
    assert_eq!(
        o.work.unwrap(),
        Path::new("/var/lib/docker/overlay2/abc/work")
    );
}

#[test]
fn other_mounts_relative_layers_and_plain_dirs_give_none() {
    assert_eq!(parse_overlay(DOCKER, Path::new("/")), None, "ext4");
    assert_eq!(parse_overlay(DOCKER, Path::new("/nowhere")), None);
    let relative =
        "400 22 0:50 / /m rw - overlay overlay rw,lowerdir=l/A:l/B,upperdir=/u,workdir=/w\n";
    assert_eq!(parse_overlay(relative, Path::new("/m")), None);
}

#[test]
fn the_mount_on_top_counts_and_escapes_are_undone() {
    let info = "\
1 0 0:1 / /m rw - overlay overlay rw,lowerdir=/old
2 0 0:2 / /m rw - overlay overlay rw,lowerdir=/a\\040b:/c\\134:d,upperdir=/u\\054x
";
    let o = parse_overlay(info, Path::new("/m")).unwrap();
    assert_eq!(o.lower, [PathBuf::from("/a b"), PathBuf::from("/c:d")]);
    assert_eq!(o.upper.unwrap(), Path::new("/u,x"));
    assert_eq!(o.work, None);
}

#[test]
fn geometry_leaves_room_for_metadata() {
    let (blocks, inodes) = image_geometry(Usage {
        blocks: 10_000,
        inodes: 2_000,
    });
    assert!(inodes >= 2_000 + 64, "{inodes}");
    assert!(blocks > 10_000 + inodes / 16, "{blocks}");
    assert_eq!(image_geometry(Usage::default()).0, 1024, "4 MiB at least");
}

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc/deep/er")).unwrap();
    std::fs::write(root.join("bin/tool"), vec![7u8; 100_000]).unwrap();
    std::fs::write(root.join("etc/deep/er/conf"), "x=1\n").unwrap();
    std::os::unix::fs::symlink("tool", root.join("bin/link")).unwrap();
    std::fs::hard_link(root.join("bin/tool"), root.join("bin/hard")).unwrap();
}

fn debugfs(img: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(img)
        .output()
        .expect("debugfs (e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_layer_becomes_an_image_once() {
    if Command::new("mkfs.ext4").arg("-V").output().is_err() {
        eprintln!("skipped: no mkfs.ext4 (e2fsprogs)");
        return;
    }
    let base = std::env::temp_dir().join(format!("husk-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let layer = base.join("layer");
    tree(&layer);
    let cache = LayerCache::new(&base.join("cache"));
    let img = cache.image_for(&layer).unwrap();
    assert!(img.starts_with(base.join("cache")));
    let ls = debugfs(&img, "ls -p /bin");
    for name in ["tool", "link", "hard"] {
        assert!(ls.contains(&format!("/{name}/")), "{name} not in {ls}");
    }
    assert!(debugfs(&img, "cat /etc/deep/er/conf").contains("x=1"));
    assert!(
        debugfs(&img, "stat /bin/tool").contains("Links: 2"),
        "hard link kept"
    );
    // Made once: the second call finds it.
    let made = std::fs::metadata(&img).unwrap().modified().unwrap();
    assert_eq!(cache.image_for(&layer).unwrap(), img);
    assert_eq!(std::fs::metadata(&img).unwrap().modified().unwrap(), made);
    // No temporary or lock file left.
    let names: Vec<_> = std::fs::read_dir(base.join("cache")).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_layer_over_the_entry_limit_is_refused() {
    let base = std::env::temp_dir().join(format!("husk-layers-big-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    tree(&base.join("layer"));
    let mut cache = LayerCache::new(&base.join("cache"));
    cache.max_entries = 3;
    let e = cache.image_for(&base.join("layer")).unwrap_err();
    assert!(e.to_string().contains("more than 3 entries"), "{e}");
    std::fs::remove_dir_all(&base).unwrap();
}

/// overlay's own marks in a lower layer: a whiteout (character device 0/0)
/// and an opaque directory (trusted.overlay.opaque=y) survive into the image.
#[test]
fn whiteouts_and_opaque_dirs_are_kept() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("mkfs.ext4").arg("-V").output().is_err() {
        eprintln!("skipped: needs root (mknod, trusted.* xattrs) and mkfs.ext4");
        return;
    }
    let base = std::env::temp_dir().join(format!("husk-layers-wh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let layer = base.join("layer");
    std::fs::create_dir_all(layer.join("opq")).unwrap();
    let wh = std::ffi::CString::new(layer.join("gone").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; mknod of a character device 0/0.
    let made = unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR, 0) };
    assert_eq!(made, 0);
    let opq = std::ffi::CString::new(layer.join("opq").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and a one-byte value.
    let set = unsafe {
        libc::setxattr(
            opq.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    let img = LayerCache::new(&base.join("cache"))
        .image_for(&layer)
        .unwrap();
    assert!(debugfs(&img, "stat /gone").contains("character special"));
    assert!(debugfs(&img, "ea_get /opq trusted.overlay.opaque").contains("(1) = \"y\""));
    std::fs::remove_dir_all(&base).unwrap();
}
