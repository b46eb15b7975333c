//! `containerd-shim-husk-v2`: containerd's shim v2 for husk. containerd
//! runs it as `containerd-shim-husk-v2 -namespace NS -id ID -address A
//! start` (which starts the shim server and prints its ttrpc address) or
//! `... delete` (cleanup after a crash); the server implements the Task
//! service over the `husk-runtime` library, one microVM per container.
//!
//! The same binary is each container's monitor (`__monitor`) and each
//! exec'd process's monitor (`__exec`): the shim starts itself as those
//! helpers, with the container's stdio as theirs ([`helper`]).

mod convert;
mod error;
mod helper;
mod mount;
mod process;
mod rpc;
mod service;
mod stdio;
mod task;

use containerd_shim::Config;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.husk.v2";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = helper::main(&args) {
        std::process::exit(code);
    }
    // The shim waits for the processes it starts itself (one waiter
    // thread per helper pid): the crate's SIGCHLD reaper would steal the
    // exit statuses the runtime library waits for (hooks, helpers that
    // fail to come up). The helpers' own children die with them
    // (PDEATHSIG), so the shim need not be a subreaper.
    let config = Config {
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    containerd_shim::run::<service::Service>(RUNTIME_ID, Some(config));
}
