//! The hidden commands this binary runs itself as: `__monitor` (a
//! container's monitor, started by `create` and `run --detach`) and
//! `__exec` (a detached exec's monitor).

use husk_runtime::container;
use husk_runtime::monitor;
use husk_runtime::session::Terminal;
use husk_runtime::spawn::inherited_ready_pipe as ready_pipe;
use husk_runtime::state::Store;

use crate::error::Result;

use crate::args::{ExecMonitorArgs, MonitorArgs};

/// Runs the monitor; returns the container's exit status. Errors went to
/// the ready pipe and the log; stderr is the container's.
pub fn monitor(store: &Store, m: MonitorArgs) -> i32 {
    let term = match m.console_socket {
        Some(s) => Terminal::Console(s),
        None => Terminal::No,
    };
    let opts = monitor::Opts {
        term,
        ready: ready_pipe(m.ready_fd),
        start: m.start,
    };
    monitor::run(store, &m.id, opts).unwrap_or(1)
}

pub fn exec_monitor(store: &Store, m: ExecMonitorArgs) -> Result<i32> {
    let ready = ready_pipe(m.ready_fd);
    Ok(container::exec_monitor(
        store,
        &m.id,
        m.exec_id,
        &m.process,
        m.console_socket,
        ready,
    )?)
}
