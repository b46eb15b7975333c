//! The 8250/16550A UART at 0x3f8 (vm-superio's `Serial`), with its output
//! going to stdout, a file or nowhere, and the last lines kept in memory for
//! error reports.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

/// Lines of guest output kept for error reports.
pub const LOG_LINES: usize = 50;
/// Longer lines are truncated in the log (the guest controls line length).
pub const LOG_LINE_MAX: usize = 512;
/// Printed by the guest kernel before it reboots (we run it with panic=-1).
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";
/// Sink writes are batched up to a newline or this many bytes.
const SINK_BUF: usize = 1024;
/// A console file never grows past this: the guest decides how much it
/// prints, and the file is on the host (often a tmpfs, i.e. host RAM).
/// When the next write would pass it, the file starts over with a line
/// saying how much was dropped, so it keeps the most recent output, which
/// is what error reports and readers of its tail want.
pub const CONSOLE_FILE_MAX: u64 = 4 << 20;

/// Where the guest console output goes.
pub enum SerialSink {
    Stdout,
    File(File),
    None,
}

/// The tail of the guest's console output.
#[derive(Default)]
pub struct SerialLog {
    lines: VecDeque<String>,
    partial: Vec<u8>,
    panicked: bool,
}

impl SerialLog {
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => self.finish_line(),
                b'\r' => {}
                _ if self.partial.len() < LOG_LINE_MAX => self.partial.push(b),
                _ => {}
            }
        }
    }

    fn finish_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        if line.contains(PANIC_MARKER) {
            self.panicked = true;
        }
        if self.lines.len() == LOG_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The last lines, the unterminated one included.
    pub fn last_lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            if v.len() == LOG_LINES {
                v.remove(0);
            }
            v.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        v
    }

    /// Whether the guest kernel reported a panic.
    pub fn panicked(&self) -> bool {
        self.panicked || String::from_utf8_lossy(&self.partial).contains(PANIC_MARKER)
    }
}

/// The UART's output: feeds the log and a (line-buffered) sink.
pub struct SerialOutput {
    sink: SerialSink,
    buf: Vec<u8>,
    log: SerialLog,
    file_cap: FileCap,
    milestones: Milestones,
}

/// Reports the guest's first console byte and first full line, once each,
/// to a function the VM's builder chose (its start-up timing marks).
#[derive(Default)]
struct Milestones {
    report: Option<fn(&str)>,
    first_byte: bool,
    first_line: bool,
}

impl Milestones {
    fn saw(&mut self, bytes: &[u8]) {
        let Some(report) = self.report else {
            return;
        };
        if !self.first_byte {
            self.first_byte = true;
            report("guest: first console byte");
        }
        if !self.first_line && bytes.contains(&b'\n') {
            self.first_line = true;
            report("guest: first console line");
        }
        if self.first_byte && self.first_line {
            self.report = None;
        }
    }
}

impl SerialOutput {
    pub fn new(sink: SerialSink) -> Self {
        Self::with_file_max(sink, CONSOLE_FILE_MAX)
    }

    fn with_file_max(sink: SerialSink, file_max: u64) -> Self {
        SerialOutput {
            sink,
            buf: Vec::new(),
            log: SerialLog::default(),
            file_cap: FileCap {
                len: 0,
                note: 0,
                max: file_max,
                dropped: 0,
            },
            milestones: Milestones::default(),
        }
    }

    /// Calls `report` with "guest: first console byte" and "guest: first
    /// console line" when those happen.
    pub fn report_milestones(&mut self, report: fn(&str)) {
        self.milestones.report = Some(report);
    }

    pub fn log(&self) -> &SerialLog {
        &self.log
    }

    /// Writes out buffered bytes. Sink errors are dropped: the guest's console
    /// must never stop the VMM.
    pub fn flush_sink(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let _ = match &mut self.sink {
            SerialSink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&self.buf).and_then(|_| out.flush())
            }
            SerialSink::File(f) => self.file_cap.write(f, &self.buf),
            SerialSink::None => Ok(()),
        };
        self.buf.clear();
    }
}

/// How full the console file is (see [`CONSOLE_FILE_MAX`]).
struct FileCap {
    /// Bytes in the file, and of those the note at its start.
    len: u64,
    note: u64,
    max: u64,
    /// Guest bytes dropped so far.
    dropped: u64,
}

impl FileCap {
    /// Appends `bytes` to `f`; if that would take it past `max`, empties it
    /// first and starts it with a line naming how much was dropped.
    fn write(&mut self, f: &mut File, bytes: &[u8]) -> io::Result<()> {
        if self.len + bytes.len() as u64 > self.max {
            self.dropped += self.len - self.note;
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            let note = format!(
                "[husk-vmm: the console file reached its {}-byte limit; \
                 {} earlier bytes of guest output dropped]\n",
                self.max, self.dropped
            );
            f.write_all(note.as_bytes())?;
            self.len = note.len() as u64;
            self.note = self.len;
        }
        f.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

impl Write for SerialOutput {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.milestones.saw(bytes);
        self.log.push(bytes);
        if !matches!(self.sink, SerialSink::None) {
            self.buf.extend_from_slice(bytes);
            if bytes.contains(&b'\n') || self.buf.len() >= SINK_BUF {
                self.flush_sink();
            }
        }
        Ok(bytes.len())
    }

    /// vm-superio flushes after every byte; batching happens in `write`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raises the UART's interrupt through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

pub struct SerialDevice {
    serial: Serial<IrqTrigger, NoEvents, SerialOutput>,
}

impl SerialDevice {
    pub fn new(irq: EventFd, sink: SerialSink) -> Self {
        SerialDevice {
            serial: Serial::new(IrqTrigger(irq), SerialOutput::new(sink)),
        }
    }

    pub fn output(&self) -> &SerialOutput {
        self.serial.writer()
    }

    pub fn output_mut(&mut self) -> &mut SerialOutput {
        self.serial.writer_mut()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (data.len(), u8::try_from(offset)) {
            (1, Ok(off)) if off < 8 => data[0] = self.serial.read(off),
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (1, Ok(off)) = (data.len(), u8::try_from(offset)) {
            if off < 8 {
                // Errors are a failed irqfd write (counter saturated) or a
                // sink error; neither may stop the guest.
                let _ = self.serial.write(off, data[0]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_are_reported_once_each() {
        static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        fn record(what: &str) {
            SEEN.lock().unwrap().push(what.to_string());
        }
        let mut out = SerialOutput::new(SerialSink::None);
        out.write_all(b"a").unwrap();
        out.report_milestones(record);
        for chunk in [&b"b"[..], b"c", b"d\n", b"e\n"] {
            out.write_all(chunk).unwrap();
        }
        assert_eq!(
            *SEEN.lock().unwrap(),
            ["guest: first console byte", "guest: first console line"]
        );
    }

    #[test]
    fn log_keeps_the_last_lines() {
        let mut log = SerialLog::default();
        for i in 0..(LOG_LINES + 10) {
            log.push(format!("line {i}\r\n").as_bytes());
        }
        log.push(b"partial");
        let lines = log.last_lines();
        assert_eq!(lines.len(), LOG_LINES);
        assert_eq!(lines[0], "line 11");
        assert_eq!(lines[LOG_LINES - 2], format!("line {}", LOG_LINES + 9));
        assert_eq!(lines[LOG_LINES - 1], "partial");
        assert!(!log.panicked());
    }

    #[test]
    fn long_lines_are_truncated() {
        let mut log = SerialLog::default();
        log.push(&vec![b'x'; 100_000]);
        log.push(b"\n");
        assert_eq!(log.last_lines()[0].len(), LOG_LINE_MAX);
    }

    #[test]
    fn panic_is_detected() {
        let mut log = SerialLog::default();
        log.push(b"[    0.5] Kernel panic - not syncing: VFS: Unable to mount root fs\n");
        log.push(b"[    0.6] Rebooting in 1 seconds..\n");
        assert!(log.panicked());

        let mut partial = SerialLog::default();
        partial.push(b"Kernel panic - not syncing: Attempted to kill init!");
        assert!(partial.panicked());
    }

    #[test]
    fn uart_output_reaches_log_and_file() {
        let dir = std::env::temp_dir().join(format!("husk-serial-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out");
        let file = File::create(&path).unwrap();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq.try_clone().unwrap(), SerialSink::File(file));
        // Enable the THR-empty interrupt, then transmit.
        dev.write(1, &[0x02]);
        for b in b"hello\nwor" {
            dev.write(0, &[*b]);
        }
        assert!(irq.read().unwrap() >= 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
        dev.output_mut().flush_sink();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\nwor");
        assert_eq!(dev.output().log().last_lines(), vec!["hello", "wor"]);

        // Odd sizes and offsets are ignored / read as zero.
        let mut d = [0xffu8; 2];
        dev.read(5, &mut d);
        assert_eq!(d, [0, 0]);
        let mut d = [0xffu8; 1];
        dev.read(1 << 40, &mut d);
        assert_eq!(d, [0]);
        dev.write(u64::MAX, &[1]);
        dev.write(0, &[1, 2, 3]);
        // Line status: transmitter empty.
        dev.read(5, &mut d);
        assert_eq!(d[0] & 0x60, 0x60);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn console_file_is_capped_and_keeps_the_latest_output() {
        let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/husk-serial-cap-").unwrap();
        let path = dir.as_path().join("console.log");
        let file = File::create(&path).unwrap();
        let max = 10_000;
        let mut out = SerialOutput::with_file_max(SerialSink::File(file), max);
        // A guest printing forever: 1 MiB in 60-byte lines.
        let mut n = 0;
        while n < 1 << 20 {
            let line = format!("{:057} ok\n", n);
            out.write_all(line.as_bytes()).unwrap();
            n += line.len();
        }
        out.flush_sink();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() as u64 <= max, "{} bytes", text.len());
        assert!(
            text.starts_with("[husk-vmm: the console file reached its 10000-byte limit; "),
            "{}",
            &text[..100]
        );
        // The newest line is there, whole.
        let last = format!("{:057} ok\n", n - 61);
        assert!(text.ends_with(&last), "{}", &text[text.len() - 100..]);
        // The count of dropped bytes adds up.
        let dropped: u64 = text
            .lines()
            .next()
            .unwrap()
            .split("; ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let kept = text.len() as u64 - text.lines().next().unwrap().len() as u64 - 1;
        assert_eq!(dropped + kept, n as u64);
        // The in-memory tail for error reports is unaffected.
        assert_eq!(out.log().last_lines().last().unwrap(), last.trim_end());
    }
}
