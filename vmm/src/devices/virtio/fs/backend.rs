//! The vhost-user side of virtio-fs: the handshake, the state the vCPU side
//! wants (shared with [`super::Fs`]) and the worker thread that brings the
//! backend in line with it.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};

use log::debug;
use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::{wanted_protocol_features, NUM_QUEUES};
use crate::bus::lock;
use crate::devices::virtio::{ActivateError, Interrupt};
use crate::vstate::vcpu::{ExitState, VmExit};

/// One ring as the driver set it up, with host virtual addresses (what
/// vhost-user's SET_VRING_ADDR carries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ring {
    pub(super) size: u16,
    pub(super) desc: u64,
    pub(super) avail: u64,
    pub(super) used: u64,
    pub(super) next_avail: u16,
}

/// What the driver brought up: everything the worker needs to start the
/// backend.
#[derive(Clone)]
pub(super) struct Activation {
    /// Keeps the memfd (whose fd the regions name) open.
    pub(super) _mem: GuestMemoryMmap,
    pub(super) regions: Vec<VhostUserMemoryRegionInfo>,
    pub(super) rings: Vec<Ring>,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) kicks: Arc<Vec<EventFd>>,
    pub(super) features: u64,
}

/// The state the vCPU side wants; the worker reconciles the backend with it.
#[derive(Default)]
pub(super) struct Wanted {
    pub(super) activation: Option<(u64, Activation)>,
    pub(super) generation: u64,
    /// The newest generation the backend has been brought in line with.
    pub(super) applied: u64,
    pub(super) stop: bool,
}

pub(super) struct Shared {
    pub(super) wanted: Mutex<Wanted>,
    /// Signalled whenever `applied` moves.
    pub(super) applied: Condvar,
    pub(super) wake: EventFd,
}

/// What the handshake at connect time learnt.
pub(super) struct Negotiated {
    pub(super) features: u64,
    pub(super) protocol: bool,
}

/// SET_OWNER, GET_FEATURES and (if offered) the protocol feature exchange.
pub(super) fn negotiate(fe: &mut Frontend) -> Result<Negotiated, String> {
    fe.set_owner().map_err(|e| format!("SET_OWNER: {e}"))?;
    let features = fe
        .get_features()
        .map_err(|e| format!("GET_FEATURES: {e}"))?;
    let protocol = features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
    if protocol {
        let offered = fe
            .get_protocol_features()
            .map_err(|e| format!("GET_PROTOCOL_FEATURES: {e}"))?;
        let acked = offered & wanted_protocol_features();
        fe.set_protocol_features(acked)
            .map_err(|e| format!("SET_PROTOCOL_FEATURES: {e}"))?;
        if acked.contains(VhostUserProtocolFeatures::MQ) {
            let n = fe
                .get_queue_num()
                .map_err(|e| format!("GET_QUEUE_NUM: {e}"))?;
            if n < NUM_QUEUES as u64 {
                return Err(format!(
                    "it serves {n} queue(s), virtio-fs needs {NUM_QUEUES}"
                ));
            }
        }
        if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
    }
    Ok(Negotiated { features, protocol })
}

/// Host addresses of a ready queue's rings.
pub(super) fn ring_of(mem: &GuestMemoryMmap, q: &Queue) -> Result<Ring, ActivateError> {
    let hva = |gpa: u64, what: &str| -> Result<u64, ActivateError> {
        mem.get_host_address(GuestAddress(gpa))
            .map(|p| p as u64)
            .map_err(|e| ActivateError::Other(format!("{what} ring at {gpa:#x}: {e}")))
    };
    Ok(Ring {
        size: q.size(),
        desc: hva(q.desc_table(), "descriptor")?,
        avail: hva(q.avail_ring(), "available")?,
        used: hva(q.used_ring(), "used")?,
        next_avail: q.next_avail(),
    })
}

/// The memory table for the backend: every guest RAM region with its fd.
pub(super) fn memory_regions(
    mem: &GuestMemoryMmap,
) -> Result<Vec<VhostUserMemoryRegionInfo>, ActivateError> {
    mem.iter()
        .map(|r| {
            VhostUserMemoryRegionInfo::from_guest_region(r).map_err(|e| {
                ActivateError::Other(format!(
                    "guest RAM at {:#x} cannot be shared ({e}); it must be memfd-backed",
                    r.start_addr().0
                ))
            })
        })
        .collect()
}

/// The vhost-user side, on its own thread.
pub(super) struct Worker {
    pub(super) fe: Frontend,
    pub(super) protocol: bool,
    pub(super) shared: Arc<Shared>,
    pub(super) exit: Arc<ExitState>,
    /// "fs TAG: SOCKET", for messages.
    pub(super) name: String,
    /// Generation of the activation the backend runs.
    pub(super) running: Option<u64>,
}

/// What `poll` saw.
enum Wake {
    Wanted,
    Socket(i16),
}

impl Worker {
    pub(super) fn run(mut self) {
        loop {
            match self.wait() {
                Ok(Wake::Wanted) => {
                    let _ = self.shared.wake.read();
                    if lock(&self.shared.wanted).stop {
                        return;
                    }
                    if let Err(e) = self.reconcile() {
                        return self.died(e);
                    }
                }
                Ok(Wake::Socket(revents)) => {
                    if lock(&self.shared.wanted).stop {
                        return;
                    }
                    return self.died(self.socket_event(revents));
                }
                Err(e) => return self.died(format!("poll: {e}")),
            }
        }
    }

    fn wait(&self) -> std::io::Result<Wake> {
        let mut fds = [
            libc::pollfd {
                fd: self.shared.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.fe.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfds for the call's
            // duration.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Requests first: a stop must win over the hang-up it causes.
            if fds[0].revents != 0 {
                return Ok(Wake::Wanted);
            }
            if fds[1].revents != 0 {
                return Ok(Wake::Socket(fds[1].revents));
            }
        }
    }

    /// The socket became readable or hung up while no request was pending.
    fn socket_event(&self, revents: i16) -> String {
        let mut b = [0u8; 1];
        // SAFETY: `b` is a writable 1-byte buffer; MSG_PEEK leaves the
        // socket's contents alone.
        let n = unsafe {
            libc::recv(
                self.fe.as_raw_fd(),
                b.as_mut_ptr().cast::<libc::c_void>(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => "the backend closed the connection".into(),
            n if n > 0 => "the backend sent an unexpected message".into(),
            _ if revents & (libc::POLLHUP | libc::POLLERR) != 0 => {
                format!("connection lost ({})", std::io::Error::last_os_error())
            }
            _ => format!("socket error: {}", std::io::Error::last_os_error()),
        }
    }

    fn died(&self, why: String) {
        self.exit.request(VmExit::Fatal(format!(
            "{}: vhost-user backend failed: {why}",
            self.name
        )));
    }

    /// Brings the backend in line with what the driver wants. An error means
    /// the backend is unusable.
    fn reconcile(&mut self) -> Result<(), String> {
        let (generation, wanted) = {
            let w = lock(&self.shared.wanted);
            (w.generation, w.activation.clone())
        };
        if let Some(g) = self.running {
            if wanted.as_ref().map(|(wg, _)| *wg) != Some(g) {
                self.stop()?;
                self.running = None;
            }
        }
        if let (None, Some((g, a))) = (self.running, wanted) {
            self.start(&a)?;
            self.running = Some(g);
        }
        let mut w = lock(&self.shared.wanted);
        w.applied = w.applied.max(generation);
        self.shared.applied.notify_all();
        Ok(())
    }

    fn start(&mut self, a: &Activation) -> Result<(), String> {
        let fe = &mut self.fe;
        fe.set_features(a.features)
            .map_err(|e| format!("SET_FEATURES {:#x}: {e}", a.features))?;
        fe.set_mem_table(&a.regions)
            .map_err(|e| format!("SET_MEM_TABLE: {e}"))?;
        for (i, r) in a.rings.iter().enumerate() {
            let at = |what: &str, e: vhost::Error| format!("queue {i}: {what}: {e}");
            fe.set_vring_num(i, r.size)
                .map_err(|e| at("SET_VRING_NUM", e))?;
            fe.set_vring_base(i, r.next_avail)
                .map_err(|e| at("SET_VRING_BASE", e))?;
            let addr = VringConfigData {
                queue_max_size: r.size,
                queue_size: r.size,
                flags: 0,
                desc_table_addr: r.desc,
                used_ring_addr: r.used,
                avail_ring_addr: r.avail,
                log_addr: None,
            };
            fe.set_vring_addr(i, &addr)
                .map_err(|e| at("SET_VRING_ADDR", e))?;
            fe.set_vring_call(i, a.interrupt.evt())
                .map_err(|e| at("SET_VRING_CALL", e))?;
            fe.set_vring_kick(i, &a.kicks[i])
                .map_err(|e| at("SET_VRING_KICK", e))?;
        }
        if self.protocol {
            for i in 0..a.rings.len() {
                fe.set_vring_enable(i, true)
                    .map_err(|e| format!("queue {i}: SET_VRING_ENABLE: {e}"))?;
            }
        }
        // Anything the driver queued before the backend had the kick fds.
        for k in a.kicks.iter() {
            let _ = k.write(1);
        }
        debug!("{}: backend started", self.name);
        Ok(())
    }

    /// Device reset: the backend stops both rings (GET_VRING_BASE) and stops
    /// touching them; the next activation sets everything up again.
    fn stop(&mut self) -> Result<(), String> {
        let fe = &mut self.fe;
        for i in 0..NUM_QUEUES {
            if self.protocol {
                fe.set_vring_enable(i, false)
                    .map_err(|e| format!("queue {i}: SET_VRING_ENABLE 0: {e}"))?;
            }
            fe.get_vring_base(i)
                .map_err(|e| format!("queue {i}: GET_VRING_BASE: {e}"))?;
        }
        debug!("{}: backend stopped (device reset)", self.name);
        Ok(())
    }
}
