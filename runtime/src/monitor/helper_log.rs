//! The logs of the monitor's helpers (virtiofsd.log, vmm.log), bounded:
//! what a guest can make a helper print must not fill the host's disk.
//! The helper writes into a pipe; a thread of the monitor copies it into
//! the log, and when the log reaches its cap it becomes `<log>.1` (the one
//! before is dropped) and a new log begins. So a log and its predecessor
//! hold at most twice the cap, the latest lines always in the log itself.

use std::fs::File;
use std::io::{PipeWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::util;

/// Largest size of a helper's log before it is rotated.
pub const LOG_CAP: u64 = 8 << 20;

/// Word that everything a helper wrote is in its log.
pub struct Drained(mpsc::Receiver<()>);

impl Drained {
    /// Waits (at most `limit`) until the helper exited and the pipe is
    /// drained into the log.
    pub fn wait(&self, limit: Duration) {
        let _ = self.0.recv_timeout(limit);
    }
}

/// Starts copying what is written into the returned pipe end (a helper's
/// stdout and stderr) into `path` (created, [`util::PRIVATE_FILE_MODE`]),
/// rotating at `cap` bytes.
pub fn start(path: &Path, cap: u64) -> std::io::Result<(PipeWriter, Drained)> {
    let file = util::create_private_file(path)?;
    let (reader, writer) = std::io::pipe()?;
    let (tx, done) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("helper-log".into())
        .spawn(move || {
            copy_capped(reader, file, &path, cap);
            let _ = tx.send(());
        })?;
    Ok((writer, Drained(done)))
}

/// The log `path` rotates into.
pub fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Copies `from` into `to` (the file at `path`) until EOF, rotating at
/// `cap`. A log that cannot be written any more is dropped, the pipe still
/// drained: the helper must never block on its log.
fn copy_capped(mut from: impl Read, to: File, path: &Path, cap: u64) {
    let mut buf = vec![0u8; 64 << 10];
    let mut out = Some(to);
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            if size >= cap {
                out = std::fs::rename(path, rotated(path))
                    .and_then(|()| util::create_private_file(path))
                    .ok();
                size = 0;
            }
            let room = usize::try_from(cap - size).unwrap_or(usize::MAX);
            let (now, rest) = chunk.split_at(chunk.len().min(room));
            if out.as_mut().is_some_and(|f| f.write_all(now).is_err()) {
                out = None;
            }
            size += now.len() as u64;
            chunk = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_rotates_at_its_cap_and_keeps_the_latest() {
        let dir = std::env::temp_dir().join(format!("husk-helper-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vmm.log");
        let (mut w, drained) = start(&path, 1000).unwrap();
        // 10 000 bytes of numbered lines, in writes of all sizes.
        let text: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        for piece in text.as_bytes().chunks(777) {
            w.write_all(piece).unwrap();
        }
        drop(w);
        drained.0.recv_timeout(Duration::from_secs(10)).unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        let before = std::fs::read_to_string(rotated(&path)).unwrap();
        assert!(
            now.len() <= 1000 && before.len() == 1000,
            "{} {}",
            now.len(),
            before.len()
        );
        assert!(now.ends_with("line 0999\n"), "{now:?}");
        // Together they are the end of what was written, nothing lost between.
        assert!(text.ends_with(&(before + &now)));
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        assert_eq!((mode(&path), mode(&rotated(&path))), (0o600, 0o600));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
