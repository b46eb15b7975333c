//! The guest side of the sandbox's network.
//!
//! Parts: [`netlink`] (a generic rtnetlink client), [`dns`].

pub mod dns;
pub mod netlink;
