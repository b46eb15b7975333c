//! A minimal vhost-user backend for the virtio-fs target: it accepts one
//! connection and answers what husk's frontend asks of a backend without
//! protocol features (GET_FEATURES: VERSION_1 | INDIRECT | EVENT_IDX;
//! GET_VRING_BASE: 0), closing every descriptor it is sent. Only the
//! VMM's side is under test: the real backend (virtiofsd) is another
//! process that the guest's queues reach directly.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread::JoinHandle;

const GET_FEATURES: u32 = 1;
const GET_VRING_BASE: u32 = 11;
/// Header flags of a reply: version 1 | REPLY.
const REPLY_FLAGS: u32 = 0x1 | 0x4;
/// The features offered: VERSION_1, INDIRECT_DESC, EVENT_IDX.
pub const FEATURES: u64 = (1 << 32) | (1 << 28) | (1 << 29);

/// Listens on `path` and serves the first connection on a thread until
/// the frontend hangs up.
pub fn spawn(path: &Path) -> std::io::Result<JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    Ok(std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            serve(s);
        }
    }))
}

fn serve(mut s: UnixStream) {
    while let Some((request, size)) = recv_header(&s) {
        let mut body = vec![0u8; size as usize];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let reply: Option<Vec<u8>> = match request {
            GET_FEATURES => Some(FEATURES.to_le_bytes().to_vec()),
            GET_VRING_BASE => {
                // struct vhost_vring_state: the index asked for, base 0.
                let mut r = body.get(..4).unwrap_or(&[0; 4]).to_vec();
                r.extend_from_slice(&0u32.to_le_bytes());
                Some(r)
            }
            _ => None,
        };
        if let Some(r) = reply {
            let mut msg = Vec::with_capacity(12 + r.len());
            msg.extend_from_slice(&request.to_le_bytes());
            msg.extend_from_slice(&REPLY_FLAGS.to_le_bytes());
            msg.extend_from_slice(&(r.len() as u32).to_le_bytes());
            msg.extend_from_slice(&r);
            if s.write_all(&msg).is_err() {
                return;
            }
        }
    }
}

/// Reads one 12-byte message header, closing any descriptors that came
/// with it; `None` at end of file or on an error.
fn recv_header(s: &UnixStream) -> Option<(u32, u32)> {
    let mut hdr = [0u8; 12];
    let mut cmsg = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: hdr.as_mut_ptr().cast(),
        iov_len: hdr.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one; the pointers set
    // below stay valid for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    // SAFETY: msg points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_WAITALL) };
    close_passed_fds(&msg);
    if n != 12 {
        return None;
    }
    let request = u32::from_le_bytes(hdr[0..4].try_into().ok()?);
    let size = u32::from_le_bytes(hdr[8..12].try_into().ok()?);
    (size <= 4096).then_some((request, size))
}

/// Closes the SCM_RIGHTS descriptors `msg` received.
fn close_passed_fds(msg: &libc::msghdr) {
    // SAFETY: msg was filled by recvmsg; the CMSG macros walk its control
    // buffer within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: c is a control message header inside the buffer.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a pure computation.
            let hdr_len = unsafe { libc::CMSG_LEN(0) } as usize;
            let n = (h.cmsg_len as usize - hdr_len) / std::mem::size_of::<libc::c_int>();
            // SAFETY: the data of an SCM_RIGHTS message is n ints.
            let data = unsafe { libc::CMSG_DATA(c) }.cast::<libc::c_int>();
            for i in 0..n {
                // SAFETY: within the n ints of this message.
                let fd = unsafe { data.add(i).read_unaligned() };
                // SAFETY: the kernel gave us this descriptor; nobody else
                // owns it.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        // SAFETY: as above.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
}
