//! Small host-side helpers: time stamps, process identity, atomic files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, IoError};

/// A process id as the kernel's calls take it (`std` hands out `u32`).
pub fn pid(id: u32) -> i32 {
    #[allow(clippy::cast_possible_wrap)] // pids are below pid_max (at most 2^22)
    let pid = id as i32;
    pid
}

/// RFC 3339 UTC time with nanoseconds, as runc writes `created`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// The start time of process `pid` (clock ticks since boot, field 22 of
/// /proc/PID/stat): with the pid it names one process across pid reuse.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); zombies count as gone.
    if f.first() == Some(&"Z") || f.first() == Some(&"X") {
        return None;
    }
    f.get(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start` is still alive.
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && proc_start_time(pid) == Some(start)
}

/// Mode of the directories husk makes (state, sockets, share): its own.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the files husk makes (state, logs, the console): its own.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Makes directory `p` and missing parents, [`PRIVATE_DIR_MODE`] whatever
/// the caller's umask (one that is stricter still takes bits away).
pub fn create_private_dir_all(p: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(p)
}

/// Makes directory `p` (its parent must exist), [`PRIVATE_DIR_MODE`];
/// fails if it exists.
pub fn create_private_dir(p: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(p)
}

/// Creates (or truncates) file `p` for writing, [`PRIVATE_FILE_MODE`] when
/// it is new, whatever the caller's umask.
pub fn create_private_file(p: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(p)
}

/// Writes `data` to `path` atomically (temp file in the same directory,
/// then rename); a new file is [`PRIVATE_FILE_MODE`].
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), IoError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    // A write that fails (a full file system) leaves no half-written file:
    // the error names the file meant, which keeps what it had.
    create_private_file(&tmp)
        .and_then(|mut f| f.write_all(data))
        .during("write", path)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
    std::fs::rename(&tmp, path)
        .during("rename", path)
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

/// Sends `sig` to `pid` if it is still the process that started at `start`.
pub fn kill_checked(pid: i32, start: u64, sig: i32) {
    if alive(pid, start) {
        // SAFETY: plain kill(2) on a pid we just checked belongs to the
        // process we started.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Waits for `child` to end within `limit`; past it, kills and reaps it
/// and returns `None`.
pub fn wait_by(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait()? {
            Some(s) => return Ok(Some(s)),
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_format() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn own_start_time() {
        let me = pid(std::process::id());
        let st = proc_start_time(me).expect("own stat");
        assert!(alive(me, st));
        assert!(!alive(me, st + 1));
        assert!(!alive(0, st));
    }
}
