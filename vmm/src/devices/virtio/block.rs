//! virtio-blk (spec §5.2) backed by a raw file.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use event_manager::EventOps;
use log::{debug, warn};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::chain::{self, Chain, Seg};
use super::{ActivateError, Interrupt, VirtioDevice, TYPE_BLOCK};

/// Size of a virtio-blk sector.
pub const SECTOR_SIZE: u64 = 512;
const SECTOR_SHIFT: u32 = 9;
const QUEUE_SIZE: u16 = 256;
/// Largest number of data segments per request we advertise.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Size of `struct virtio_blk_outhdr`.
const REQUEST_HEADER_SIZE: u32 = 16;
/// Requests handled per queue notification before yielding the event loop.
/// The request status byte (virtio 1.2 §5.2.6; virtio-bindings has the
/// values as u32).
const STATUS_OK: u8 = 0;
const STATUS_IOERR: u8 = 1;
const STATUS_UNSUPP: u8 = 2;
const _: () = assert!(
    STATUS_OK as u32 == VIRTIO_BLK_S_OK
        && STATUS_IOERR as u32 == VIRTIO_BLK_S_IOERR
        && STATUS_UNSUPP as u32 == VIRTIO_BLK_S_UNSUPP
);
const MAX_REQUESTS_PER_KICK: usize = 4 * QUEUE_SIZE as usize;

/// Why a block device could not be created.
#[derive(Debug)]
pub enum BlockError {
    /// Opening the backing file failed.
    Open(PathBuf, std::io::Error),
    /// Finding the backing file's size or identity failed.
    Stat(PathBuf, std::io::Error),
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockError::Open(p, e) => write!(f, "cannot open disk image {}: {e}", p.display()),
            BlockError::Stat(p, e) => write!(f, "cannot stat disk image {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for BlockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BlockError::Open(_, e) | BlockError::Stat(_, e) => Some(e),
        }
    }
}

/// Request type from the header, with the types we serve decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Unsupported(u32),
}

/// A validated request: every segment lies in guest memory and has the right
/// direction; for IN/OUT the sector range lies within the disk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub kind: RequestType,
    pub sector: u64,
    pub data: Vec<Seg>,
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// A request that cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// No writable status byte: nothing can be reported back.
    NoStatus,
    /// Malformed; report `VIRTIO_BLK_S_IOERR` at `status`.
    Malformed {
        status: GuestAddress,
        why: &'static str,
    },
}

/// Validate a flattened chain as a virtio-blk request (spec §5.2.6): a
/// 16-byte device-readable header, data buffers (device-writable for IN and
/// GET_ID, device-readable for OUT), and a device-writable status byte (the
/// last byte of the last descriptor). Pure: reads only the header from guest
/// memory.
pub(crate) fn parse_request(
    mem: &GuestMemoryMmap,
    chain: &Chain,
    capacity: u64,
) -> Result<Request, RequestError> {
    let status_seg = chain.writable.last().ok_or(RequestError::NoStatus)?;
    if status_seg.len == 0 {
        return Err(RequestError::NoStatus);
    }
    // The segment lies in guest memory, so this cannot overflow.
    let status = GuestAddress(status_seg.addr.0 + u64::from(status_seg.len) - 1);
    let bad = |why| Err(RequestError::Malformed { status, why });

    let Some(hdr_seg) = chain.readable.first() else {
        return bad("no request header");
    };
    if hdr_seg.len != REQUEST_HEADER_SIZE {
        return bad("request header is not 16 bytes");
    }
    let mut hdr = [0u8; REQUEST_HEADER_SIZE as usize];
    if chain::read_bytes(mem, &chain.readable[..1], 0, &mut hdr) != hdr.len() {
        return bad("request header unreadable");
    }
    let type_ = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
    let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap());

    let kind = match type_ {
        VIRTIO_BLK_T_IN => RequestType::In,
        VIRTIO_BLK_T_OUT => RequestType::Out,
        VIRTIO_BLK_T_FLUSH => RequestType::Flush,
        VIRTIO_BLK_T_GET_ID => RequestType::GetId,
        other => RequestType::Unsupported(other),
    };
    let extra_readable = &chain.readable[1..];
    let extra_writable = &chain.writable[..chain.writable.len() - 1];
    let data: &[Seg] = match kind {
        RequestType::In | RequestType::GetId => {
            if !extra_readable.is_empty() {
                return bad("device-readable data in a read request");
            }
            extra_writable
        }
        RequestType::Out => {
            if !extra_writable.is_empty() {
                return bad("device-writable data in a write request");
            }
            extra_readable
        }
        RequestType::Flush | RequestType::Unsupported(_) => &[],
    };
    let data_len: u64 = data.iter().map(|s| u64::from(s.len)).sum();
    match kind {
        RequestType::In | RequestType::Out => {
            if !data_len.is_multiple_of(SECTOR_SIZE) {
                return bad("data length is not a multiple of 512");
            }
            let end = sector.checked_add(data_len >> SECTOR_SHIFT);
            if !matches!(end, Some(end) if end <= capacity) {
                return bad("sector range beyond the end of the disk");
            }
        }
        RequestType::GetId => {
            if data_len == 0 {
                return bad("GET_ID without a buffer");
            }
        }
        RequestType::Flush | RequestType::Unsupported(_) => {}
    }
    Ok(Request {
        kind,
        sector,
        data: data.to_vec(),
        data_len,
        status,
    })
}

/// A virtio-blk device backed by a raw image file.
pub struct Block {
    disk: Disk,
    config: [u8; 16],
    queue_sizes: [u16; 1],
    active: Option<Active>,
}

struct Disk {
    path: PathBuf,
    file: File,
    read_only: bool,
    capacity: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
}

struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("path", &self.disk.path)
            .field("read_only", &self.disk.read_only)
            .field("capacity", &self.disk.capacity)
            .finish_non_exhaustive()
    }
}

impl Block {
    /// Open the image at `path` (`O_RDONLY` if `read_only`, else `O_RDWR`).
    /// The disk has `size / 512` sectors; a trailing partial sector is not
    /// visible to the guest.
    pub fn new(path: &Path, read_only: bool) -> Result<Block, BlockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| BlockError::Open(path.to_path_buf(), e))?;
        let meta = file
            .metadata()
            .map_err(|e| BlockError::Stat(path.to_path_buf(), e))?;
        // Works for regular files and block devices alike.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| BlockError::Stat(path.to_path_buf(), e))?;
        if size % SECTOR_SIZE != 0 {
            warn!(
                "virtio-blk: {} is {size} bytes, not a multiple of 512; the tail is not visible",
                path.display()
            );
        }
        let capacity = size >> SECTOR_SHIFT;

        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let id_str = format!("{:x}{:x}", meta.dev(), meta.ino());
        let n = id_str.len().min(id.len());
        id[..n].copy_from_slice(&id_str.as_bytes()[..n]);

        // struct virtio_blk_config: capacity, size_max, seg_max.
        let mut config = [0u8; 16];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());

        Ok(Block {
            disk: Disk {
                path: path.to_path_buf(),
                file,
                read_only,
                capacity,
                id,
            },
            config,
            queue_sizes: [QUEUE_SIZE],
            active: None,
        })
    }

    /// Disk size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.capacity
    }

    /// The 20-byte GET_ID string.
    pub fn id(&self) -> &[u8] {
        &self.disk.id
    }

    /// Serve up to MAX_REQUESTS_PER_KICK requests. Returns whether more may
    /// be pending.
    fn process_requests(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mut used_any = false;
        let mut more = false;
        for n in 0.. {
            if n == MAX_REQUESTS_PER_KICK {
                more = true;
                break;
            }
            let Some(desc_chain) = active.queue.pop_descriptor_chain(&active.mem) else {
                break;
            };
            let (head, flat) = chain::collect(desc_chain);
            let used_len = match flat {
                Err(e) => {
                    debug!("virtio-blk: bad descriptor chain: {e}");
                    0
                }
                Ok(flat) => self.disk.serve(&active.mem, &flat),
            };
            if let Err(e) = active.queue.add_used(&active.mem, head, used_len) {
                debug!("virtio-blk: cannot return descriptor {head}: {e}");
                continue;
            }
            used_any = true;
        }
        if used_any {
            active.interrupt.signal_used_queue();
        }
        more
    }
}

impl Disk {
    /// Parse, execute and complete one request. Returns the used length
    /// (bytes written into the chain, status byte included).
    fn serve(&self, mem: &GuestMemoryMmap, flat: &Chain) -> u32 {
        match parse_request(mem, flat, self.capacity) {
            Ok(req) => {
                let (status, data_written) = self.execute(mem, &req);
                if mem.write_obj(status, req.status).is_err() {
                    return 0;
                }
                data_written.saturating_add(1)
            }
            Err(RequestError::Malformed { status, why }) => {
                debug!("virtio-blk: bad request: {why}");
                match mem.write_obj(STATUS_IOERR, status) {
                    Ok(()) => 1,
                    Err(_) => 0,
                }
            }
            Err(RequestError::NoStatus) => {
                debug!("virtio-blk: request without a status byte");
                0
            }
        }
    }

    /// Returns (status, bytes of data written into guest memory).
    fn execute(&self, mem: &GuestMemoryMmap, req: &Request) -> (u8, u32) {
        let (ok, ioerr) = (STATUS_OK, STATUS_IOERR);
        match req.kind {
            RequestType::In => {
                match chain::pread_exact(mem, &req.data, &self.file, req.sector << SECTOR_SHIFT) {
                    // The data segments of one chain add up to less than 4 GiB.
                    Ok(n) => (ok, u32::try_from(n).unwrap_or(u32::MAX)),
                    Err(e) => {
                        warn!("virtio-blk: read at sector {}: {e}", req.sector);
                        (ioerr, 0)
                    }
                }
            }
            RequestType::Out => {
                if self.read_only {
                    return (ioerr, 0);
                }
                match chain::pwrite_all(mem, &req.data, &self.file, req.sector << SECTOR_SHIFT) {
                    Ok(_) => (ok, 0),
                    Err(e) => {
                        warn!("virtio-blk: write at sector {}: {e}", req.sector);
                        (ioerr, 0)
                    }
                }
            }
            RequestType::Flush => {
                if self.read_only {
                    return (ok, 0);
                }
                match self.file.sync_data() {
                    Ok(()) => (ok, 0),
                    Err(e) => {
                        warn!("virtio-blk: flush: {e}");
                        (ioerr, 0)
                    }
                }
            }
            RequestType::GetId => {
                let n = usize::try_from(req.data_len)
                    .unwrap_or(usize::MAX)
                    .min(self.id.len());
                let done = chain::write_bytes(mem, &req.data, 0, &self.id[..n]);
                // At most the 20 bytes of the id.
                (ok, u32::try_from(done).unwrap_or(u32::MAX))
            }
            RequestType::Unsupported(_) => (STATUS_UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1u64 << VIRTIO_BLK_F_FLUSH)
            | (1u64 << VIRTIO_BLK_F_SEG_MAX);
        if self.disk.read_only {
            f |= 1u64 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _acked_features: u64,
    ) -> Result<(), ActivateError> {
        let got = queues.len();
        let Some(queue) = queues.into_iter().next().filter(|_| got == 1) else {
            return Err(ActivateError::QueueCount { expected: 1, got });
        };
        self.active = Some(Active {
            mem,
            queue,
            interrupt,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn process_queue(&mut self, index: usize, _ops: &mut EventOps) -> bool {
        index == 0 && self.process_requests()
    }
}

/// Copy config-space bytes `offset..offset+data.len()` into `data`, zeros
/// past the end of `config`.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = (config.len() - start).min(data.len());
    data[..n].copy_from_slice(&config[start..start + n]);
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
