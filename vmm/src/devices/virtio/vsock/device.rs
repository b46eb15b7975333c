//! The virtio device: binding the host listener, the three queues, activate
//! and reset, and dispatching queue notifications and fd events to the
//! [`Muxer`].

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events};
use log::{debug, error};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::timerfd::TimerFd;

use super::muxer::{Muxer, LISTENER_DATA, TIMER_DATA};
use super::packet::{HDR_SIZE, HOST_CID};
use super::unix;
use crate::devices::virtio::chain;
use crate::devices::virtio::{ActivateError, Interrupt, VirtioDevice, TYPE_VSOCK};

/// The guest driver fills the whole rx ring with 4 KiB buffers at probe
/// time, so the ring size is boot time and guest memory: 128 (vhost-vsock's
/// size) still lets 512 KiB of host-to-guest data be in flight.
const QUEUE_SIZE: u16 = 128;
pub(super) const RX: usize = 0;
pub(super) const TX: usize = 1;
const EVT: usize = 2;

/// Packets handled per queue notification before yielding the event loop.
const MAX_PACKETS_PER_KICK: usize = 1024;

/// Why a vsock device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// CIDs 0-2 and `u32::MAX` are reserved.
    #[error("invalid vsock guest CID {0}")]
    InvalidCid(u64),
    /// Something that is not a socket already exists at the UDS path.
    #[error("vsock socket path {} exists and is not a socket", .0.display())]
    PathExists(PathBuf),
    /// A live listener already owns the UDS path.
    #[error("vsock socket path {} is in use by another process", .0.display())]
    PathInUse(PathBuf),
    /// Inspecting, removing or binding the UDS path failed.
    #[error("cannot bind vsock socket {}: {}", .0.display(), .1)]
    Bind(PathBuf, io::Error),
    /// Creating the timer failed.
    #[error("cannot create vsock timer: {0}")]
    Timer(io::Error),
}

/// The guest's side of an activated device.
struct Active {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
}

/// A virtio-vsock device whose host side is a Unix socket.
pub struct Vsock {
    pub(super) mux: Muxer,
    /// (dev, ino) of the socket file we created, to remove it on drop.
    uds_id: Option<(u64, u64)>,
    config: [u8; 8],
    queue_sizes: [u16; 3],
    active: Option<Active>,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("guest_cid", &self.mux.guest_cid)
            .field("uds_path", &self.mux.uds_path)
            .field("connections", &self.mux.connection_count())
            .finish_non_exhaustive()
    }
}

/// Bind a non-blocking listener at `path`, replacing a stale socket file;
/// returns it with the (dev, ino) of the file it created.
fn bind_listener(path: &Path) -> Result<(UnixListener, Option<(u64, u64)>), VsockError> {
    let bind_err = |e| VsockError::Bind(path.to_path_buf(), e);
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match unix::connect_nonblocking(path) {
            Ok(_) => return Err(VsockError::PathInUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(VsockError::PathInUse(path.to_path_buf()))
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                debug!("vsock: removing stale socket {}", path.display());
                std::fs::remove_file(path).map_err(bind_err)?;
            }
            Err(e) => return Err(bind_err(e)),
        },
        Ok(_) => return Err(VsockError::PathExists(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    // A jailed husk-vmm's own socket is its jail ids' (the host, as root,
    // connects either way): `smoke`'s client connects to it jailed.
    if let Some((uid, gid)) = crate::confine::jail::ids() {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(bind_err)?;
    }
    // Removed by the confined main thread when the VM ends.
    crate::confine::paths::register(path);
    let uds_id = crate::confine::paths::lstat_id(path);
    Ok((listener, uds_id))
}

impl Vsock {
    /// Create the device and bind its host listener at `uds_path`. A stale
    /// socket file at the path is replaced; anything else there is an error.
    /// The socket file is removed when the device is dropped.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Vsock, VsockError> {
        if guest_cid <= HOST_CID || guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let (listener, uds_id) = bind_listener(uds_path)?;
        let timer = TimerFd::new().map_err(|e| VsockError::Timer(e.into()))?;
        Ok(Vsock {
            mux: Muxer::new(guest_cid, uds_path.to_path_buf(), listener, timer),
            uds_id,
            config: guest_cid.to_le_bytes(),
            queue_sizes: [QUEUE_SIZE; 3],
            active: None,
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.mux.guest_cid
    }

    /// The host-side listening socket path.
    pub fn uds_path(&self) -> &Path {
        &self.mux.uds_path
    }

    /// Handle tx packets, then fill rx. Returns whether tx work is left.
    fn run_queues(&mut self, tx: bool) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mut more = false;
        if tx {
            more = active.process_tx(&mut self.mux);
        }
        active.fill_rx(&mut self.mux);
        more
    }
}

impl Active {
    /// Handle up to MAX_PACKETS_PER_KICK tx packets. Returns whether more
    /// may be pending.
    fn process_tx(&mut self, mux: &mut Muxer) -> bool {
        let mut used_any = false;
        let mut more = false;
        for n in 0.. {
            if n == MAX_PACKETS_PER_KICK {
                more = true;
                break;
            }
            let Some(desc_chain) = self.queues[TX].pop_descriptor_chain(&self.mem) else {
                break;
            };
            let (head, flat) = chain::collect(desc_chain);
            match flat {
                Ok(flat) => mux.handle_tx_chain(&self.mem, &flat),
                Err(e) => debug!("vsock: bad tx descriptor chain: {e}"),
            }
            if let Err(e) = self.queues[TX].add_used(&self.mem, head, 0) {
                debug!("vsock: cannot return tx descriptor {head}: {e}");
                continue;
            }
            used_any = true;
        }
        if used_any {
            self.interrupt.signal_used_queue();
        }
        more
    }

    /// Put pending packets into rx buffers.
    fn fill_rx(&mut self, mux: &mut Muxer) {
        let mut used_any = false;
        for _ in 0..MAX_PACKETS_PER_KICK {
            if !mux.has_rx_pending() {
                break;
            }
            let Some(desc_chain) = self.queues[RX].pop_descriptor_chain(&self.mem) else {
                break;
            };
            let (head, flat) = chain::collect(desc_chain);
            let flat = match flat {
                Ok(f) if f.readable.is_empty() && f.writable_len() >= HDR_SIZE as u64 => f,
                Ok(_) => {
                    debug!("vsock: rx buffer too small or not device-writable");
                    if self.queues[RX].add_used(&self.mem, head, 0).is_err() {
                        continue;
                    }
                    used_any = true;
                    continue;
                }
                Err(e) => {
                    debug!("vsock: bad rx descriptor chain: {e}");
                    if self.queues[RX].add_used(&self.mem, head, 0).is_err() {
                        continue;
                    }
                    used_any = true;
                    continue;
                }
            };
            let Some(len) = mux.next_rx_packet(&self.mem, &flat) else {
                // Nothing to send after all: hand the buffer back to the queue.
                self.queues[RX].go_to_previous_position();
                break;
            };
            if let Err(e) = self.queues[RX].add_used(&self.mem, head, len) {
                debug!("vsock: cannot return rx descriptor {head}: {e}");
                continue;
            }
            used_any = true;
        }
        if used_any {
            self.interrupt.signal_used_queue();
        }
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let path = &self.mux.uds_path;
        if let Some(id) = crate::confine::paths::lstat_id(path) {
            if Some(id) == self.uds_id {
                let _ = crate::confine::paths::remove_file(path);
            }
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        1u64 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::devices::virtio::block::read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _acked_features: u64,
    ) -> Result<(), ActivateError> {
        // Once per driver bring-up, never per packet.
        static ACTIVATED: AtomicBool = AtomicBool::new(false);
        crate::timing::mark_once(&ACTIVATED, "guest: vsock driver up");
        ActivateError::check_queues(3, queues.len(), None)?;
        self.active = Some(Active {
            mem,
            queues,
            interrupt,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.mux.drop_all_connections();
    }

    fn after_reset(&mut self, ops: &mut EventOps) {
        self.mux.sync(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(
            &self.mux.listener,
            LISTENER_DATA,
            EventSet::IN,
        )) {
            error!("vsock: cannot register listener: {e}");
        }
        if let Err(e) = ops.add(Events::with_data(&self.mux.timer, TIMER_DATA, EventSet::IN)) {
            error!("vsock: cannot register timer: {e}");
        }
    }

    fn process_queue(&mut self, index: usize, ops: &mut EventOps) -> bool {
        self.mux.sync(ops);
        let more = match index {
            RX => self.run_queues(false),
            TX => self.run_queues(true),
            // We never post events; the buffers stay with us.
            EVT => false,
            _ => false,
        };
        self.mux.sync(ops);
        more
    }

    fn process_event(&mut self, events: Events, ops: &mut EventOps) {
        // Deregister connections dropped by a reset first, so no stale
        // event is acted upon.
        self.mux.sync(ops);
        match events.data() {
            LISTENER_DATA if events.fd() == self.mux.listener.as_raw_fd() => self.mux.accept(),
            TIMER_DATA if events.fd() == self.mux.timer.as_raw_fd() => {
                // Packets the guest already queued count before deadlines
                // are judged: after a host stall the timer and the guest's
                // RESPONSE can wake the loop together.
                self.run_queues(true);
                self.mux.sync(ops);
                self.mux.timer_tick();
            }
            data => self.mux.conn_event(data, events),
        }
        self.run_queues(false);
        self.mux.sync(ops);
    }
}
