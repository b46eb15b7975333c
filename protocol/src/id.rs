//! Container and exec ids: the one place their rules live, for the host
//! runtime and the agent alike.
//!
//! Two alphabets meet here. A runtime is given container ids by a daemon
//! and takes what runc takes ([`check_container_id`]: `[A-Za-z0-9]` then
//! `[A-Za-z0-9_.+-]`, at most [`MAX_CONTAINER_ID`] bytes). The agent names
//! cgroups and files after the ids it is sent, so ids on the wire are
//! stricter ([`check_guest_id`]: no `+`, at most [`MAX_GUEST_ID`] bytes).
//! The host turns one into the other with [`guest_id`], which always yields
//! an id the agent takes.

/// Longest container id a runtime takes (runc's bound).
pub const MAX_CONTAINER_ID: usize = 1024;
/// Longest container or exec id on the wire (what the agent takes).
pub const MAX_GUEST_ID: usize = 64;

/// An id that breaks its rule; the text shown is cut short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A container id given to the host runtime.
    #[error("invalid container id {shown:?}: must match [A-Za-z0-9][A-Za-z0-9_.+-]*")]
    Container { shown: String },
    /// A container or exec id sent to the agent; `field` names it
    /// (`id`, `exec_id`).
    #[error(
        "{field}: {shown:?} is not a valid id ([A-Za-z0-9][A-Za-z0-9_.-]*, at most {MAX_GUEST_ID} bytes)"
    )]
    Guest { field: String, shown: String },
}

/// `[A-Za-z0-9]` first, then letters, digits and the bytes of `extra`.
fn id_matches(id: &str, max: usize, extra: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= max
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// A container id a runtime takes: runc's rule, `[A-Za-z0-9][A-Za-z0-9_.+-]*`,
/// at most [`MAX_CONTAINER_ID`] bytes (never `.`, `..` or a path).
pub fn check_container_id(id: &str) -> Result<(), IdError> {
    if id_matches(id, MAX_CONTAINER_ID, b"_.+-") {
        Ok(())
    } else {
        Err(IdError::Container {
            shown: id.chars().take(80).collect(),
        })
    }
}

/// A container or exec id the agent takes: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at
/// most [`MAX_GUEST_ID`] bytes. `field` names the id in the error.
pub fn check_guest_id(id: &str, field: &str) -> Result<(), IdError> {
    if id_matches(id, MAX_GUEST_ID, b"_.-") {
        Ok(())
    } else {
        let mut shown = id.to_string();
        crate::truncate_utf8(&mut shown, MAX_GUEST_ID);
        Err(IdError::Guest {
            field: field.to_string(),
            shown,
        })
    }
}

/// The id the agent knows a container by: the runtime's id when it is a
/// valid guest id, else a shortened, cleaned form (one container per VM,
/// so it only needs to be readable). Always passes [`check_guest_id`].
pub fn guest_id(id: &str) -> String {
    let mut g: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(MAX_GUEST_ID)
        .collect();
    if !g.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        if g.is_empty() {
            g.push('c');
        } else {
            g.replace_range(..1, "c");
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(check_container_id("abc-1.2_x+y").is_ok());
        assert!(check_container_id(&"a".repeat(64)).is_ok());
        assert!(check_container_id(&"a".repeat(1024)).is_ok());
        assert!(check_container_id(&"a".repeat(1025)).is_err());
        for bad in ["", "-x", "a/b", "..", ".", "a b"] {
            assert!(check_container_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_container_id("a/b").unwrap_err().to_string(),
            "invalid container id \"a/b\": must match [A-Za-z0-9][A-Za-z0-9_.+-]*"
        );
    }

    #[test]
    fn guest_ids() {
        assert!(check_guest_id("a-b_c.1", "id").is_ok());
        assert!(check_guest_id(&"a".repeat(64), "id").is_ok());
        for bad in ["", "-a", "a/b", "a+b", "..", &"a".repeat(65)] {
            assert!(check_guest_id(bad, "id").is_err(), "{bad}");
        }
        assert_eq!(
            check_guest_id("a+b", "exec_id").unwrap_err().to_string(),
            "exec_id: \"a+b\" is not a valid id ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 64 bytes)"
        );
    }

    #[test]
    fn every_container_id_maps_to_a_guest_id() {
        assert_eq!(guest_id("abc"), "abc");
        assert_eq!(guest_id("+x"), "cx");
        assert_eq!(guest_id("a+b"), "a_b");
        assert_eq!(guest_id(&"a".repeat(100)).len(), 64);
        for id in ["abc", "a+b", "0.1-2_3", &"x+".repeat(500), "Z"] {
            assert!(check_container_id(id).is_ok(), "{id}");
            let g = guest_id(id);
            assert!(check_guest_id(&g, "id").is_ok(), "{id} -> {g}");
        }
        assert!(check_guest_id(&guest_id(""), "id").is_ok());
    }
}
