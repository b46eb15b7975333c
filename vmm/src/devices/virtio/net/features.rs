//! What the device offers, what an acked set means once its dependencies
//! are enforced, the tap offloads that follow from it, and the check of
//! each frame's `virtio_net_hdr_v1` against it.

use husk_sys::tun::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;

/// `struct virtio_net_hdr_v1` (virtio 1.x: always with `num_buffers`), in
/// front of every frame on both queues and on the tap.
pub const HDR_LEN: usize = 12;
/// Largest frame after the header: a 64 KiB TSO frame with its Ethernet
/// and VLAN headers.
pub const MAX_FRAME_DATA: usize = 65550;
/// Largest header + frame read from the tap or taken from a tx chain.
pub const MAX_FRAME: usize = HDR_LEN + MAX_FRAME_DATA;
/// Offset of `num_buffers` in the header.
pub const NUM_BUFFERS_OFFSET: usize = 10;
/// The smallest frame worth handing on: a header and an Ethernet header.
pub const MIN_FRAME: usize = HDR_LEN + 14;

pub const fn bit(b: u32) -> u64 {
    1 << b
}

/// Feature bits offered; `VIRTIO_NET_F_MTU` only when an MTU is set.
pub fn offered(mtu: bool) -> u64 {
    let mut f = bit(VIRTIO_F_VERSION_1)
        | bit(VIRTIO_RING_F_INDIRECT_DESC)
        | bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_CSUM)
        | bit(VIRTIO_NET_F_GUEST_CSUM)
        | bit(VIRTIO_NET_F_GUEST_TSO4)
        | bit(VIRTIO_NET_F_GUEST_TSO6)
        | bit(VIRTIO_NET_F_GUEST_ECN)
        | bit(VIRTIO_NET_F_HOST_TSO4)
        | bit(VIRTIO_NET_F_HOST_TSO6)
        | bit(VIRTIO_NET_F_HOST_ECN)
        | bit(VIRTIO_NET_F_MRG_RXBUF);
    if mtu {
        f |= bit(VIRTIO_NET_F_MTU);
    }
    f
}

/// `acked` without the features whose prerequisites the driver left out
/// (virtio 1.2 §5.1.3.1: TSO needs checksum offload, ECN needs TSO). A
/// driver must not ack them, but one that does gets the smaller set, so
/// the tap is never asked for offloads the guest cannot take.
pub fn effective(acked: u64) -> u64 {
    let has = |f: u32| acked & bit(f) != 0;
    let mut f = acked;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        f &= !(bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6));
    }
    if f & (bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6)) == 0 {
        f &= !bit(VIRTIO_NET_F_GUEST_ECN);
    }
    if !has(VIRTIO_NET_F_CSUM) {
        f &= !(bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6));
    }
    if f & (bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6)) == 0 {
        f &= !bit(VIRTIO_NET_F_HOST_ECN);
    }
    f
}

/// The `TUN_F_*` offloads for [`effective`] features: what the tap may
/// hand us because the guest takes it (partial checksums, TSO frames).
pub fn tun_offloads(features: u64) -> u32 {
    let has = |f: u32| features & bit(f) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut t = TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        t |= TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        t |= TUN_F_TSO6;
    }
    if has(VIRTIO_NET_F_GUEST_ECN) {
        t |= TUN_F_TSO_ECN;
    }
    t
}

/// Which way a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Tap to guest: the guest's `GUEST_*` features apply.
    Rx,
    /// Guest to tap: the `CSUM`/`HOST_*` features apply.
    Tx,
}

/// Checks the header at the start of `frame` against `features` (from
/// [`effective`]): a partial checksum or a segmentation type the receiver
/// did not agree to is refused. On rx, checksum flags the guest did not
/// negotiate are cleared (the spec wants 0 there) and `num_buffers` is
/// left for the caller.
pub fn check_header(frame: &mut [u8], features: u64, dir: Dir) -> Result<(), &'static str> {
    if frame.len() < MIN_FRAME {
        return Err("shorter than a header and an Ethernet header");
    }
    let has = |f: u32| features & bit(f) != 0;
    let (csum, tso4, tso6, ecn) = match dir {
        Dir::Rx => (
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
        ),
        Dir::Tx => (
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
        ),
    };
    let flags = u32::from(frame[0]);
    if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && !has(csum) {
        return Err("partial checksum without checksum offload");
    }
    if dir == Dir::Rx {
        let keep = if has(csum) {
            VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
        } else {
            0
        };
        // Both flags are in the low byte.
        frame[0] &= u8::try_from(keep).unwrap_or(0);
    }
    let gso = u32::from(frame[1]);
    if gso & VIRTIO_NET_HDR_GSO_ECN != 0 && !has(ecn) {
        return Err("ECN segmentation not negotiated");
    }
    match gso & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => Ok(()),
        VIRTIO_NET_HDR_GSO_TCPV4 if has(tso4) => Ok(()),
        VIRTIO_NET_HDR_GSO_TCPV6 if has(tso6) => Ok(()),
        _ => Err("segmentation type not negotiated"),
    }
}
