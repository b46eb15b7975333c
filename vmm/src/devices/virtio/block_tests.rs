use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

use super::super::chain::{Chain, Seg};
use super::super::test_utils::{guest_memory, within, Driver, Rng};
use super::*;
use crate::cast::usize_from;

const DISK_SECTORS: u64 = 64;

fn disk() -> TempFile {
    let t = TempFile::new().unwrap();
    let data: Vec<u8> = (0..DISK_SECTORS * 512).map(|i| (i % 251) as u8).collect();
    t.as_file().write_all(&data).unwrap();
    t
}

fn file_bytes(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut v = vec![0u8; len];
    f.read_exact(&mut v).unwrap();
    v
}

fn pattern(off: u64, len: usize) -> Vec<u8> {
    (off..off + len as u64).map(|i| (i % 251) as u8).collect()
}

struct Blk<'a> {
    drv: Driver<'a>,
}

impl<'a> Blk<'a> {
    fn new(mem: &'a GuestMemoryMmap, path: &Path, ro: bool) -> Self {
        let dev = Block::new(path, ro).unwrap();
        let mut drv = Driver::new(mem, Box::new(dev));
        assert!(drv.activate(1 << VIRTIO_BLK_F_FLUSH));
        drv.run_until(1, |_| true);
        Blk { drv }
    }

    fn header(&mut self, type_: u32, sector: u64) -> GuestAddress {
        let h = self.drv.alloc(16);
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&type_.to_le_bytes());
        b[8..16].copy_from_slice(&sector.to_le_bytes());
        self.drv.write_mem(h, &b);
        h
    }

    /// Submit a chain and wait for it to be used; returns the used length.
    fn submit(&mut self, bufs: &[(GuestAddress, u32, bool)]) -> u32 {
        let head = self.drv.add_chain(0, bufs);
        self.drv.kick(0);
        let mut got = None;
        assert!(self.drv.run_until(5, |d| {
            for (h, len) in d.take_used(0) {
                assert_eq!(h, head, "requests complete in order");
                got = Some(len);
            }
            got.is_some()
        }));
        got.unwrap()
    }

    /// A three-part request; returns (status, used len).
    fn request(
        &mut self,
        type_: u32,
        sector: u64,
        data: GuestAddress,
        len: u32,
        dev_writes: bool,
    ) -> (u8, u32) {
        let h = self.header(type_, sector);
        let status = self.drv.alloc(1);
        self.drv.write_mem(status, &[0xff]);
        let used = self.submit(&[(h, 16, false), (data, len, dev_writes), (status, 1, true)]);
        (self.drv.read_mem(status, 1)[0], used)
    }
}

#[test]
fn config_and_features() {
    let mem = guest_memory();
    let t = disk();
    let blk = Block::new(t.as_path(), false).unwrap();
    assert_eq!(blk.capacity(), DISK_SECTORS);
    let f = blk.avail_features();
    assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    let drv = Driver::new(&mem, Box::new(blk));
    assert_eq!(drv.read32(0x8), 2);
    assert_eq!(drv.read_config(0, 8), DISK_SECTORS.to_le_bytes());
    assert_eq!(drv.read_config(12, 4), SEG_MAX.to_le_bytes());
    // Two 32-bit reads of the 64-bit capacity, as Linux does.
    let lo = drv.read_config(0, 4);
    let hi = drv.read_config(4, 4);
    assert_eq!(
        u64::from(u32::from_le_bytes(lo.try_into().unwrap()))
            | u64::from(u32::from_le_bytes(hi.try_into().unwrap())) << 32,
        DISK_SECTORS
    );

    let ro = Block::new(t.as_path(), true).unwrap();
    assert_ne!(ro.avail_features() & (1 << VIRTIO_BLK_F_RO), 0);
}

#[test]
fn open_errors_name_the_path() {
    let err = Block::new(Path::new("/nonexistent/husk-disk.img"), false).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/husk-disk.img"),
        "{err}"
    );
}

#[test]
fn read_write_flush_get_id() {
    let mem = guest_memory();
    let t = disk();
    let id = Block::new(t.as_path(), false).unwrap().id().to_vec();
    let mut b = Blk::new(&mem, t.as_path(), false);

    // Read sectors 2..4.
    let buf = b.drv.alloc(1024);
    let (st, used) = b.request(VIRTIO_BLK_T_IN, 2, buf, 1024, true);
    assert_eq!((st, used), (STATUS_OK, 1025));
    assert_eq!(b.drv.read_mem(buf, 1024), pattern(1024, 1024));

    // Read split across three descriptors (and a chain longer than 3).
    let (b1, b2, b3) = (b.drv.alloc(100), b.drv.alloc(300), b.drv.alloc(112));
    let h = b.header(VIRTIO_BLK_T_IN, 10);
    let st = b.drv.alloc(1);
    let used = b.submit(&[
        (h, 16, false),
        (b1, 100, true),
        (b2, 300, true),
        (b3, 112, true),
        (st, 1, true),
    ]);
    assert_eq!(used, 513);
    assert_eq!(b.drv.read_mem(st, 1)[0], STATUS_OK);
    let mut got = b.drv.read_mem(b1, 100);
    got.extend(b.drv.read_mem(b2, 300));
    got.extend(b.drv.read_mem(b3, 112));
    assert_eq!(got, pattern(10 * 512, 512));

    // Write sector 5.
    let data = b.drv.alloc(512);
    b.drv.write_mem(data, &[0xab; 512]);
    let (st, used) = b.request(VIRTIO_BLK_T_OUT, 5, data, 512, false);
    assert_eq!((st, used), (STATUS_OK, 1));
    assert_eq!(file_bytes(t.as_path(), 5 * 512, 512), vec![0xab; 512]);
    assert_eq!(file_bytes(t.as_path(), 4 * 512, 512), pattern(4 * 512, 512));

    // Last sector.
    let (st, _) = b.request(VIRTIO_BLK_T_OUT, DISK_SECTORS - 1, data, 512, false);
    assert_eq!(st, STATUS_OK);

    // Flush: header + status only.
    let h = b.header(VIRTIO_BLK_T_FLUSH, 0);
    let st = b.drv.alloc(1);
    assert_eq!(b.submit(&[(h, 16, false), (st, 1, true)]), 1);
    assert_eq!(b.drv.read_mem(st, 1)[0], STATUS_OK);

    // GET_ID.
    let idbuf = b.drv.alloc(20);
    let (st, used) = b.request(VIRTIO_BLK_T_GET_ID, 0, idbuf, 20, true);
    assert_eq!((st, used), (STATUS_OK, 21));
    assert_eq!(b.drv.read_mem(idbuf, 20), id);
    assert!(id.iter().any(|&c| c != 0));

    // Unsupported request type (DISCARD).
    let (st, _) = b.request(11, 0, data, 16, false);
    assert_eq!(st, STATUS_UNSUPP);
}

#[test]
fn bad_requests_get_ioerr_and_the_device_keeps_going() {
    let mem = guest_memory();
    let t = disk();
    let mut b = Blk::new(&mem, t.as_path(), false);
    let buf = b.drv.alloc(4096);
    let ioerr = STATUS_IOERR;

    // Out of range.
    assert_eq!(
        b.request(VIRTIO_BLK_T_IN, DISK_SECTORS - 1, buf, 1024, true)
            .0,
        ioerr
    );
    assert_eq!(
        b.request(VIRTIO_BLK_T_IN, DISK_SECTORS, buf, 512, true).0,
        ioerr
    );
    assert_eq!(
        b.request(VIRTIO_BLK_T_OUT, u64::MAX, buf, 512, false).0,
        ioerr
    );
    assert_eq!(
        b.request(VIRTIO_BLK_T_IN, u64::MAX - 1, buf, 1024, true).0,
        ioerr
    );
    // Not a multiple of the sector size.
    assert_eq!(b.request(VIRTIO_BLK_T_IN, 0, buf, 100, true).0, ioerr);
    // Wrong data direction.
    assert_eq!(b.request(VIRTIO_BLK_T_IN, 0, buf, 512, false).0, ioerr);
    assert_eq!(b.request(VIRTIO_BLK_T_OUT, 0, buf, 512, true).0, ioerr);
    // Short header.
    let h = b.header(VIRTIO_BLK_T_IN, 0);
    let st = b.drv.alloc(1);
    b.submit(&[(h, 8, false), (buf, 512, true), (st, 1, true)]);
    assert_eq!(b.drv.read_mem(st, 1)[0], ioerr);
    // No header at all.
    let st = b.drv.alloc(1);
    b.submit(&[(buf, 512, true), (st, 1, true)]);
    assert_eq!(b.drv.read_mem(st, 1)[0], ioerr);
    // No writable status byte: nothing to report, used length 0.
    let h = b.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(b.submit(&[(h, 16, false), (buf, 512, false)]), 0);
    // Data buffer outside guest memory: the chain is rejected whole.
    let h = b.header(VIRTIO_BLK_T_IN, 0);
    let st = b.drv.alloc(1);
    b.drv.write_mem(st, &[0xee]);
    assert_eq!(
        b.submit(&[
            (h, 16, false),
            (GuestAddress(0xffff_ffff_f000), 512, true),
            (st, 1, true)
        ]),
        0
    );
    assert_eq!(b.drv.read_mem(st, 1)[0], 0xee);
    // Buffer straddling the end of guest memory.
    let end = GuestAddress(super::super::test_utils::MEM_SIZE as u64 - 256);
    assert_eq!(
        b.submit(&[(h, 16, false), (end, 512, true), (st, 1, true)]),
        0
    );
    // Readable after writable.
    assert_eq!(
        b.submit(&[(h, 16, false), (st, 1, true), (buf, 512, false)]),
        0
    );

    // Still works.
    let (st, used) = b.request(VIRTIO_BLK_T_IN, 0, buf, 512, true);
    assert_eq!((st, used), (STATUS_OK, 513));
    assert_eq!(b.drv.read_mem(buf, 512), pattern(0, 512));
}

#[test]
fn read_only_disk_rejects_writes() {
    let mem = guest_memory();
    let t = disk();
    let mut b = Blk::new(&mem, t.as_path(), true);
    let data = b.drv.alloc(512);
    b.drv.write_mem(data, &[0x55; 512]);
    let (st, _) = b.request(VIRTIO_BLK_T_OUT, 0, data, 512, false);
    assert_eq!(st, STATUS_IOERR);
    assert_eq!(file_bytes(t.as_path(), 0, 512), pattern(0, 512));
    // Reads and flushes still work.
    let (st, _) = b.request(VIRTIO_BLK_T_IN, 1, data, 512, true);
    assert_eq!(st, STATUS_OK);
    assert_eq!(b.drv.read_mem(data, 512), pattern(512, 512));
}

#[test]
fn many_requests_in_one_kick() {
    let mem = guest_memory();
    let t = disk();
    let mut b = Blk::new(&mem, t.as_path(), false);
    let mut expect = Vec::new();
    for i in 0..40u64 {
        let h = b.header(VIRTIO_BLK_T_IN, i);
        let buf = b.drv.alloc(512);
        let st = b.drv.alloc(1);
        let head = b
            .drv
            .add_chain(0, &[(h, 16, false), (buf, 512, true), (st, 1, true)]);
        expect.push((head, buf, st, i));
    }
    b.drv.kick(0);
    let mut used = Vec::new();
    assert!(b.drv.run_until(5, |d| {
        used.extend(d.take_used(0));
        used.len() == 40
    }));
    for ((head, buf, st, i), (uh, ul)) in expect.into_iter().zip(used) {
        assert_eq!((uh, ul), (head, 513));
        assert_eq!(b.drv.read_mem(st, 1)[0], 0);
        assert_eq!(b.drv.read_mem(buf, 512), pattern(i * 512, 512));
    }
}

#[test]
fn parse_request_is_strict() {
    let mem = guest_memory();
    let hdr = GuestAddress(0x1000);
    let data = GuestAddress(0x2000);
    let st = GuestAddress(0x3000);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
    h[8..16].copy_from_slice(&3u64.to_le_bytes());
    mem.write_slice(&h, hdr).unwrap();
    let seg = |a: GuestAddress, len| Seg { addr: a, len };
    let chain = Chain {
        readable: vec![seg(hdr, 16)],
        writable: vec![seg(data, 1024), seg(st, 4)],
    };
    let r = parse_request(&mem, &chain, 5).unwrap();
    assert_eq!(r.kind, RequestType::In);
    assert_eq!(r.sector, 3);
    assert_eq!(r.data, vec![seg(data, 1024)]);
    // The status byte is the last byte of the last descriptor.
    assert_eq!(r.status, GuestAddress(0x3003));
    // One sector too many.
    assert!(matches!(
        parse_request(&mem, &chain, 4),
        Err(RequestError::Malformed { status, .. }) if status == GuestAddress(0x3003)
    ));
    let no_status = Chain {
        readable: vec![seg(hdr, 16)],
        writable: vec![],
    };
    assert_eq!(
        parse_request(&mem, &no_status, 5),
        Err(RequestError::NoStatus)
    );
    let empty_status = Chain {
        readable: vec![seg(hdr, 16)],
        writable: vec![seg(st, 0)],
    };
    assert_eq!(
        parse_request(&mem, &empty_status, 5),
        Err(RequestError::NoStatus)
    );
}

#[test]
fn bogus_head_index_does_not_stall_the_queue() {
    let mem = guest_memory();
    let t = disk();
    let mut b = Blk::new(&mem, t.as_path(), false);
    // An avail entry naming descriptor 300 of a 256-entry table...
    let q = &b.drv.queues[0];
    let idx = u16::from_le(q.avail().idx().load());
    q.avail()
        .ring()
        .ref_at(usize::from(idx % 256))
        .unwrap()
        .store(u16::to_le(300));
    q.avail().idx().store(u16::to_le(idx.wrapping_add(1)));
    // ...and a good request right behind it.
    let buf = b.drv.alloc(512);
    let (st, used) = b.request(VIRTIO_BLK_T_IN, 0, buf, 512, true);
    assert_eq!((st, used), (STATUS_OK, 513));
}

/// A hostile guest at random: 2000 kicks of random descriptor tables and
/// avail rings on the request queue, over guest memory sprinkled with
/// random bytes (request headers of any type and sector). Nothing panics,
/// no kick stalls (the whole run must end within 60 s), and every 50 rounds
/// a device reset and a clean bring-up give a disk that writes and reads
/// back correctly.
#[test]
fn hostile_queue_contents_never_stall_or_break_the_device() {
    let t = disk();
    let path = t.as_path().to_path_buf();
    within(60, "virtio-blk under hostile queues", move || {
        let mem = guest_memory();
        let mut b = Blk::new(&mem, &path, false);
        let mut rng = Rng(0x6875_736b_b10c_0001);
        // Rounds in which the device put anything on the used ring: the
        // junk reached its request parsing, not just the queue's checks.
        let mut answered = 0;
        for round in 0..2000 {
            for _ in 0..16 {
                let at = GuestAddress(0x10_0000 + rng.below(30 << 20));
                let n = 16 + usize_from(rng.below(48));
                let junk = rng.bytes(n);
                b.drv.write_mem(at, &junk);
            }
            b.drv.scribble(0, &mut rng);
            let used = b.drv.queues[0].used().idx().load();
            b.drv.kick(0);
            b.drv.poll(0);
            if b.drv.queues[0].used().idx().load() != used {
                answered += 1;
            } else {
                // As a driver whose requests time out would: reset, so the
                // next round's junk is parsed again (an avail index moved
                // past the ring stops the queue until a reset).
                assert!(b.drv.reset_and_activate(1 << VIRTIO_BLK_F_FLUSH));
            }
            if round % 50 == 49 {
                assert!(b.drv.reset_and_activate(1 << VIRTIO_BLK_F_FLUSH));
                let sector = rng.below(DISK_SECTORS - 2);
                let data = rng.bytes(1024);
                let out = b.drv.alloc(1024);
                b.drv.write_mem(out, &data);
                let st = b.request(VIRTIO_BLK_T_OUT, sector, out, 1024, false);
                assert_eq!(st, (STATUS_OK, 1), "write after round {round}");
                let back = b.drv.alloc(1024);
                let st = b.request(VIRTIO_BLK_T_IN, sector, back, 1024, true);
                assert_eq!(st, (STATUS_OK, 1025), "read after round {round}");
                assert_eq!(b.drv.read_mem(back, 1024), data, "data after round {round}");
            }
        }
        assert!(
            answered > 1600,
            "only {answered} of 2000 rounds reached the device"
        );
    });
}
