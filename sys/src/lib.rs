//! husk's one layer of small descriptor and signal helpers over libc, for
//! what std does not offer: the agent in the guest and the runtime, CLI,
//! protocol and benchmark on the host all use these (one copy each).
//!
//! * [`deadline`]: filling a buffer from a stream by a deadline.
//! * [`mount`]: a mount's flags as mount(2) takes them.
//! * [`caps`]: capset(2) with 64-bit sets.
//! * [`fd`]: O_NONBLOCK on any descriptor, the state of a pipe's read end.
//! * [`scm`]: passing a descriptor over a Unix socket (SCM_RIGHTS).
//! * [`term`]: a terminal's window size.
//! * [`signal`]: signal sets, blocking them, waiting for one.
//! * [`tun`]: tap descriptors (create, vnet header, offloads).
//! * `netlink` (feature `netlink`): a synchronous netlink client with
//!   deadlines, bounds and the kernel's own error texts.
//!
//! Where std has the thing, use std instead: `std::io::pipe()` for a
//! close-on-exec pipe, `AsFd::as_fd().try_clone_to_owned()` for a
//! close-on-exec duplicate, `set_nonblocking` on sockets,
//! `IsTerminal::is_terminal`.

pub mod caps;
pub mod deadline;
pub mod fd;
pub mod mount;
#[cfg(feature = "netlink")]
pub mod netlink;
pub mod scm;
pub mod signal;
pub mod term;
pub mod tun;

pub use fd::{pipe_state, set_nonblocking, PipeState};
pub use scm::{recv_fd, send_fd, send_fd_with};
pub use signal::SignalSet;
pub use term::{set_window_size, window_size, WindowSize};
