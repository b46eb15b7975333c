//! The guest side of the sandbox's network.
//!
//! Parts: [`netlink`] (a generic rtnetlink client).

pub mod netlink;
