//! virtio-fs (virtio 1.2 §5.11) as a vhost-user frontend: the queues are
//! served by another process (virtiofsd) that maps guest RAM (a memfd, see
//! `arch::ram`) and gets the queue-notify eventfds (kick) and the device's
//! irqfd (call) over the vhost-user socket. The VMM only keeps the config
//! space (tag + number of request queues) and the backend's state in step
//! with the driver's.
//!
//! The vhost-user conversation (rust-vmm's `vhost` crate, `Frontend`) runs on
//! a worker thread of its own: every message is a blocking round trip to a
//! process we do not control, and neither a vCPU (which sets DRIVER_OK or
//! resets the device) nor the event loop (which serves the other devices)
//! may wait on it. vCPU-side calls only record the wanted state and wake the
//! worker; the worker reconciles the backend with it.
//!
//! Backend death: the worker polls the socket between requests; end of file,
//! a hang-up, an unsolicited message or a failed request stops the VM with
//! a fatal error naming the tag and socket (a container whose file system is
//! gone cannot go on, and the guest's pending FUSE requests would otherwise
//! hang for ever). A backend that stays connected but stops answering stalls
//! only the worker (and the guest's file system), never a vCPU or the event
//! loop; the socket is shut down when the device is dropped, which ends the
//! worker.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, warn};
use vhost::vhost_user::{Frontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use backend::{memory_regions, negotiate, ring_of, Activation, Shared, Wanted, Worker};

use super::block::read_config_bytes;
use super::{ActivateError, Interrupt, VirtioDevice, TYPE_FS};
use crate::bus::lock;
use crate::config::FS_TAG_MAX;
use crate::confine::ThreadKind;
use crate::vstate::vcpu::ExitState;

mod backend;

/// hiprio + one request queue.
pub const NUM_QUEUES: usize = 2;
/// `struct virtio_fs_config`: tag[36] + le32 num_request_queues.
pub const CONFIG_SIZE: usize = FS_TAG_MAX + 4;
/// How long to wait for the backend's socket to appear and accept, and for
/// its answers to the first requests.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_RETRY: Duration = Duration::from_millis(10);

/// The virtio feature bits we let through from the backend to the driver.
/// Ring features are the backend's business (it walks the rings); the
/// transport-level ones we leave out need transport support we lack
/// (packed rings, notification data, an IOMMU).
pub const SUPPORTED_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_INDIRECT_DESC) | (1 << VIRTIO_RING_F_EVENT_IDX);

/// Protocol features we use if the backend offers them: MQ (to check that it
/// serves both queues) and REPLY_ACK (every request is acknowledged, so a
/// backend that rejects the memory table or a ring fails activation loudly).
pub fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
}

/// The device config space for `tag` (at most [`FS_TAG_MAX`] bytes; the
/// config code checks).
pub fn config_space(tag: &str) -> [u8; CONFIG_SIZE] {
    let mut c = [0u8; CONFIG_SIZE];
    let t = tag.as_bytes();
    let n = t.len().min(FS_TAG_MAX);
    c[..n].copy_from_slice(&t[..n]);
    c[FS_TAG_MAX..].copy_from_slice(&1u32.to_le_bytes());
    c
}

/// The features offered to the driver, given the backend's.
pub fn offered_features(backend: u64) -> Result<u64, String> {
    if backend & (1 << VIRTIO_F_VERSION_1) == 0 {
        return Err(format!(
            "the backend does not offer VIRTIO_F_VERSION_1 (features {backend:#x})"
        ));
    }
    Ok(backend & SUPPORTED_FEATURES)
}

/// What SET_FEATURES tells the backend: the driver's features plus
/// VHOST_USER_F_PROTOCOL_FEATURES if the backend offered it.
pub fn backend_features(driver_acked: u64, protocol: bool) -> u64 {
    let p = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    (driver_acked & !p) | if protocol { p } else { 0 }
}

/// Why a virtio-fs device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The socket did not accept a connection in time.
    #[error(
        "cannot connect to vhost-user socket {} within {}: {}",
        .0.display(),
        human(*.1),
        crate::config::io_msg(.2)
    )]
    Connect(PathBuf, Duration, std::io::Error),
    /// The backend did not finish the first handshake in time.
    #[error("vhost-user backend on {} did not answer within {}", .0.display(), human(*.1))]
    Timeout(PathBuf, Duration),
    /// A request of the handshake failed.
    #[error("vhost-user backend on {}: {}", .0.display(), .1)]
    Backend(PathBuf, String),
    /// A host resource (eventfd, thread) could not be created.
    #[error("{0}")]
    Host(std::io::Error),
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Connects to `path`, retrying while it does not exist or refuses (the
/// backend creates and starts listening on it asynchronously).
fn connect(path: &Path, timeout: Duration) -> Result<UnixStream, FsError> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(CONNECT_RETRY);
            }
            Err(e) => return Err(FsError::Connect(path.to_path_buf(), timeout, e)),
        }
    }
}

/// Longest a device reset waits for the backend to stop its rings.
const RESET_WAIT: Duration = Duration::from_secs(1);

/// The virtio-fs device.
pub struct Fs {
    tag: String,
    config: [u8; CONFIG_SIZE],
    queue_sizes: [u16; NUM_QUEUES],
    avail_features: u64,
    protocol: bool,
    kicks: Arc<Vec<EventFd>>,
    shared: Arc<Shared>,
    /// A clone of the socket, to shut it down (which ends any request the
    /// worker is blocked in) when the device goes away.
    sock: UnixStream,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl Fs {
    /// Connects to the backend on `socket` (waiting up to `timeout` for it to
    /// appear and answer) and negotiates. A backend that dies later stops
    /// the VM through `exit`.
    pub fn new(
        tag: &str,
        socket: &Path,
        queue_size: u16,
        exit: Arc<ExitState>,
        timeout: Duration,
    ) -> Result<Fs, FsError> {
        let stream = connect(socket, timeout)?;
        let sock = stream.try_clone().map_err(FsError::Host)?;
        let mut fe = Frontend::from_stream(stream, NUM_QUEUES as u64);
        let shared = Arc::new(Shared {
            wanted: Mutex::new(Wanted::default()),
            applied: Condvar::new(),
            wake: EventFd::new(libc::EFD_NONBLOCK).map_err(FsError::Host)?,
        });
        let (tx, rx) = mpsc::channel();
        let worker_shared = shared.clone();
        let name = format!("fs {tag}: {}", socket.display());
        let worker_tag = tag.to_string();
        let worker = std::thread::Builder::new()
            .name(format!("vhost-fs-{tag}"))
            .spawn(move || {
                let n = match negotiate(&mut fe) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                // Connected and negotiated: from here on the guest's queue
                // setup reaches this thread.
                let me = format!("vhost-fs-{worker_tag}");
                if let Err(e) = crate::confine::confine_thread(ThreadKind::FsWorker, &me) {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
                let protocol = n.protocol;
                if tx.send(Ok(n)).is_err() {
                    return;
                }
                Worker {
                    fe,
                    protocol,
                    shared: worker_shared,
                    exit,
                    name,
                    running: None,
                }
                .run()
            })
            .map_err(FsError::Host)?;
        let fail = |e: FsError| {
            let _ = sock.shutdown(std::net::Shutdown::Both);
            e
        };
        let n = match rx.recv_timeout(timeout) {
            Ok(Ok(n)) => n,
            Ok(Err(m)) => return Err(fail(FsError::Backend(socket.to_path_buf(), m))),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(fail(FsError::Timeout(socket.to_path_buf(), timeout)))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(fail(FsError::Backend(
                    socket.to_path_buf(),
                    "handshake thread ended".into(),
                )))
            }
        };
        let avail_features = offered_features(n.features)
            .map_err(|m| fail(FsError::Backend(socket.to_path_buf(), m)))?;
        debug!(
            "fs {tag}: backend features {:#x}, offering {avail_features:#x}, protocol features: {}",
            n.features, n.protocol
        );
        Ok(Fs {
            tag: tag.to_string(),
            config: config_space(tag),
            queue_sizes: [queue_size; NUM_QUEUES],
            avail_features,
            protocol: n.protocol,
            kicks: Arc::new(Vec::new()),
            shared,
            sock,
            worker: Some(worker),
        })
    }

    fn set_wanted(&self, f: impl FnOnce(&mut Wanted)) {
        f(&mut lock(&self.shared.wanted));
        if let Err(e) = self.shared.wake.write(1) {
            warn!("fs {}: cannot wake the vhost-user thread: {e}", self.tag);
        }
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        self.set_wanted(|w| w.stop = true);
        // Ends a request the worker may be blocked in; the backend sees the
        // connection close once the worker drops its end.
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        // Never wait on a backend: the worker ends on its own.
        drop(self.worker.take());
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        ActivateError::check_queues(NUM_QUEUES, queues.len(), Some(self.kicks.len()))?;
        let rings = queues
            .iter()
            .map(|q| ring_of(&mem, q))
            .collect::<Result<Vec<_>, _>>()?;
        let a = Activation {
            regions: memory_regions(&mem)?,
            _mem: mem,
            rings,
            interrupt,
            kicks: self.kicks.clone(),
            features: backend_features(acked_features, self.protocol),
        };
        self.set_wanted(|w| {
            w.generation += 1;
            w.activation = Some((w.generation, a));
        });
        Ok(())
    }

    /// Waits (at most [`RESET_WAIT`]) until the backend has stopped the
    /// rings. The driver re-initializes them right after a reset, and its
    /// kicks reach the backend directly (KVM ioeventfd): a backend still on
    /// the old rings would read the half-made new ones and give up for good
    /// (libvhost-user: "Guest moved used index from 1 to 0"). Resets are
    /// rare (driver unbind; husk's guests do not reboot in place), and the
    /// bound keeps a stalled backend from holding the vCPU.
    fn reset(&mut self) {
        let mut generation = 0;
        self.set_wanted(|w| {
            w.generation += 1;
            w.activation = None;
            generation = w.generation;
        });
        let deadline = Instant::now() + RESET_WAIT;
        let mut w = lock(&self.shared.wanted);
        while w.applied < generation && !w.stop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(
                    "fs {}: the backend did not stop its rings within {RESET_WAIT:?} of a reset",
                    self.tag
                );
                return;
            }
            w = self
                .shared
                .applied
                .wait_timeout(w, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn external_queues(&self) -> bool {
        true
    }

    fn set_queue_notifiers(&mut self, evts: Vec<EventFd>) {
        self.kicks = Arc::new(evts);
    }

    fn process_queue(&mut self, _index: usize, _ops: &mut event_manager::EventOps) -> bool {
        // Never called: the transport does not poll our queue eventfds.
        false
    }
}

#[cfg(test)]
mod tests;
