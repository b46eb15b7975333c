//! The commands: what runc does for each, for a container in a microVM.
//! Each is a thin layer over `husk_runtime`: it turns flags into a request
//! and prints what the runtime answers.

mod create;
mod events;
mod exec;
mod info;
mod kill;
mod monitor;
mod pause;
mod state;
mod update;

use husk_runtime::state::Store;

use crate::error::Result;

use crate::args::{Cmd, Global};

pub fn dispatch(g: &Global, cmd: Cmd) -> Result<i32> {
    let store = Store::new(g.root.clone());
    match cmd {
        Cmd::Create(a) => create::create(g, &store, &a, false).map(|_| 0),
        Cmd::Start(a) => create::start(&store, &a.id).map(|_| 0),
        Cmd::Run(a) => create::run(g, &store, &a),
        Cmd::State(a) => state::state(&store, &a.id).map(|_| 0),
        Cmd::Kill(a) => kill::kill(&store, &a.id, a.signal.as_deref(), a.all).map(|_| 0),
        Cmd::Delete(a) => kill::delete(&store, &a.id, a.force).map(|_| 0),
        Cmd::Exec(a) => exec::exec(g, &store, a),
        Cmd::Ps(a) => state::ps(&store, &a.id, &a.format, &a.ps_args).map(|_| 0),
        Cmd::List(a) => state::list(&store, &a.format, a.quiet).map(|_| 0),
        Cmd::Pause(a) => pause::pause(&store, &a.id, true).map(|_| 0),
        Cmd::Resume(a) => pause::pause(&store, &a.id, false).map(|_| 0),
        Cmd::Update(a) => update::update(&store, a).map(|_| 0),
        Cmd::Events(a) => events::events(&store, &a.id, a.stats, &a.interval).map(|_| 0),
        Cmd::Features => info::features().map(|_| 0),
        Cmd::Spec(a) => info::spec(a.bundle.as_deref()).map(|_| 0),
        Cmd::Checkpoint(_) => info::checkpoint(),
        Cmd::Restore(_) => info::restore(),
        Cmd::Bench(r) => info::bench(&r.args),
        Cmd::Monitor(m) => Ok(monitor::monitor(&store, m)),
        Cmd::ExecMonitor(m) => monitor::exec_monitor(&store, m),
    }
}
