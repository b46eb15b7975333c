//! `events`: the container's stats every interval and its OOM kills as the
//! agent reports them, as JSON lines (or its stats once with `--stats`).

use std::io::Write;

use husk_runtime::container;
use husk_runtime::state::{Status, Store};
use serde_json::{json, Value};

use crate::error::Result;

use crate::parse::parse_interval;

fn stats_value(id: &str, s: &husk_protocol::ContainerStats) -> Value {
    json!({"type": "stats", "id": id, "data": serde_json::to_value(s).unwrap_or(Value::Null)})
}

pub fn events(store: &Store, id: &str, stats: bool, interval: &str) -> Result<()> {
    container::check_id(id)?;
    let every = parse_interval(interval)?;
    let st = container::running(store, id)?;
    let get = || -> Result<Value> { Ok(stats_value(id, &container::stats(store, &st)?)) };
    if stats {
        println!("{}", get()?);
        return Ok(());
    }
    // OOM events as the agent pushes them; stats every interval.
    let ev = container::events(store, &st)?;
    let gid = st.guest_id.clone();
    let idc = id.to_string();
    let _ = std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            let mut ev = ev;
            while let Ok(e) = ev.next_event() {
                if let husk_protocol::Event::Oom { id: g, .. } = e {
                    if g == gid {
                        println!("{}", json!({"type": "oom", "id": idc}));
                        let _ = std::io::stdout().flush();
                    }
                }
            }
        });
    loop {
        let st = store.load(id).map_err(husk_runtime::Error::from)?;
        if container::live_status(store, &st) == Status::Stopped {
            return Ok(());
        }
        match get() {
            Ok(v) => {
                println!("{v}");
                let _ = std::io::stdout().flush();
            }
            Err(e) => husk_runtime::debug!("{e}"),
        }
        std::thread::sleep(every);
    }
}
