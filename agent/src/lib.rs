//! husk-agent as a library: the guest agent's parts, by concern. The
//! binary (`main.rs`) only calls [`cli::main`].
//!
//! * [`cli`]: the command line and start-up (PID 1 or a local server);
//! * [`init`], [`reaper`]: PID 1 duties (early mounts, reaping);
//! * [`server`]: the protocol server (accept loop, one thread per connection);
//! * [`runtime`]: the containers behind the protocol (registry, stdio
//!   relays, events, OOM watch, stats);
//! * [`container`]: one OCI container (spec validation, cgroup, container-init);
//! * [`net`]: the sandbox's network (guest NICs, its namespace, DNS forwarder);
//! * [`local`]: `husk-agent container run`, a container without a VM;
//! * [`log`], [`sysinfo`]: console logging, facts about the guest
//!   (descriptor and signal helpers are in `husk_sys`, shared with the host).

pub mod cli;
pub mod container;
pub mod init;
pub mod local;
pub mod log;
pub mod net;
pub mod reaper;
pub mod runtime;
pub mod server;
pub mod sysinfo;
