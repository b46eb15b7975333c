//! The host side of the sandbox's network.

pub mod netlink;
