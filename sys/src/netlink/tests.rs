use super::*;

/// One attribute: length, type, value, padding.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    let len = u16::try_from(4 + value.len()).unwrap();
    p.extend_from_slice(&len.to_ne_bytes());
    p.extend_from_slice(&kind.to_ne_bytes());
    p.extend_from_slice(value);
    while !p.len().is_multiple_of(4) {
        p.push(0);
    }
    p
}

#[test]
fn ext_ack_text_is_found_after_a_capped_echo() {
    let mut p = vec![0u8; 16];
    p.extend(nla(
        NLMSGERR_ATTR_MSG,
        b"Exclusivity flag on, cannot modify\0",
    ));
    assert_eq!(
        error_ext_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).as_deref(),
        Some("Exclusivity flag on, cannot modify")
    );
    assert_eq!(error_ext_ack(NLM_F_CAPPED, &p), None);
    assert_eq!(error_ext_ack(NLM_F_ACK_TLVS, &p[..8]), None);
}

#[test]
fn ext_ack_text_is_found_after_a_whole_echo() {
    // The echoed request: a 20-byte message (padded to 20), then the text.
    let mut p = vec![0u8; 20];
    p[..4].copy_from_slice(&20u32.to_ne_bytes());
    p.extend(nla(2, &[0, 0, 0, 0])); // NLMSGERR_ATTR_OFFS first
    p.extend(nla(NLMSGERR_ATTR_MSG, b"  Unknown device type  \0"));
    assert_eq!(
        error_ext_ack(NLM_F_ACK_TLVS, &p).as_deref(),
        Some("Unknown device type")
    );
    // An echo longer than the payload: no text, no panic.
    p[..4].copy_from_slice(&4096u32.to_ne_bytes());
    assert_eq!(error_ext_ack(NLM_F_ACK_TLVS, &p), None);
}

#[test]
fn ext_ack_text_is_bounded_and_may_be_missing() {
    let long = vec![b'x'; 1000];
    let t = ext_ack_text(&nla(NLMSGERR_ATTR_MSG, &long)).unwrap();
    assert_eq!(t.len(), MAX_EXT_MSG);
    assert_eq!(ext_ack_text(&nla(NLMSGERR_ATTR_MSG, b"\0")), None);
    assert_eq!(ext_ack_text(&nla(2, b"abcd")), None);
    assert_eq!(ext_ack_text(&[1, 2, 3]), None);
}

#[test]
fn kernel_errors_print_errno_and_explanation() {
    let e = kernel_error(-libc::EEXIST, Some("Exclusivity flag on".into()));
    assert!(e.to_string().starts_with("File exists"), "{e}");
    assert!(e.to_string().ends_with("(Exclusivity flag on)"), "{e}");
    assert_eq!(e.errno(), Some(libc::EEXIST));
    let e = kernel_error(-libc::ENODEV, None);
    assert_eq!(e.to_string(), "No such device (os error 19)");
    assert_eq!(NetlinkError::Timeout(DEFAULT_TIMEOUT).errno(), None);
}

#[test]
fn requests_are_encoded_with_their_flags() {
    let p = encode(
        Raw {
            kind: libc::RTM_GETLINK,
            body: vec![0; IFINFOMSG_LEN],
        },
        NLM_F_REQUEST | NLM_F_DUMP,
    );
    let nb = NetlinkBuffer::new_checked(&p[..]).unwrap();
    assert_eq!(usize::try_from(nb.length()).unwrap(), 16 + IFINFOMSG_LEN);
    assert_eq!(nb.message_type(), libc::RTM_GETLINK);
    assert_eq!(nb.flags(), NLM_F_REQUEST | NLM_F_DUMP);
}

/// `struct ifinfomsg`.
const IFINFOMSG_LEN: usize = 16;

/// A message type of the test's own, as a caller that links no message
/// crate would write one: the type and the bytes after the header.
#[derive(Debug)]
struct Raw {
    kind: u16,
    body: Vec<u8>,
}

impl NetlinkSerializable for Raw {
    fn message_type(&self) -> u16 {
        self.kind
    }

    fn buffer_len(&self) -> usize {
        self.body.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.body);
    }
}

impl NetlinkDeserializable for Raw {
    type Error = netlink_packet_core::DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Raw, Self::Error> {
        Ok(Raw {
            kind: header.message_type,
            body: payload.to_vec(),
        })
    }
}

/// An `ifinfomsg` for link `index` (0: none), changing no flags.
fn ifinfomsg(kind: u16, index: i32) -> Raw {
    let mut body = vec![0; IFINFOMSG_LEN];
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    Raw { kind, body }
}

/// Runs `f` on a thread in a network namespace of its own (only `lo` in
/// it); returns without running it when that is not permitted.
fn in_fresh_netns(name: &str, f: impl FnOnce() + Send) {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped {name}: not root");
        return;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare with a constant flag; it changes only this
            // thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                eprintln!("skipped {name}: unshare: {}", io::Error::last_os_error());
                return;
            }
            f();
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
}

#[test]
fn a_fresh_namespace_answers_dumps_requests_and_refusals() {
    in_fresh_netns("netlink", || {
        let mut nl = Netlink::route().unwrap();
        // A dump: `lo` only.
        let links: Vec<Raw> = nl.dump(ifinfomsg(libc::RTM_GETLINK, 0), 16).unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].kind, libc::RTM_NEWLINK);
        let lo = i32::from_ne_bytes(links[0].body[4..8].try_into().unwrap());
        // The bound holds.
        let e = nl
            .dump::<_, Raw>(ifinfomsg(libc::RTM_GETLINK, 0), 0)
            .unwrap_err();
        assert!(matches!(e, NetlinkError::TooMany(0)), "{e}");
        // A request with a reply, and the same without room for it.
        let one: Vec<Raw> = nl
            .request_replies(ifinfomsg(libc::RTM_GETLINK, lo), 0, 1)
            .unwrap();
        assert_eq!(one.len(), 1);
        let e = nl.request(ifinfomsg(libc::RTM_GETLINK, lo), 0).unwrap_err();
        assert!(matches!(e, NetlinkError::TooMany(0)), "{e}");
        // An acknowledged change (nothing changed), then a refusal.
        nl.request(ifinfomsg(libc::RTM_SETLINK, lo), 0).unwrap();
        let e = nl
            .request(ifinfomsg(libc::RTM_SETLINK, 0x7fff_fff0), 0)
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
        // Still in step after the errors.
        let again: Vec<Raw> = nl.dump(ifinfomsg(libc::RTM_GETLINK, 0), 16).unwrap();
        assert_eq!(again.len(), 1);
    });
}
