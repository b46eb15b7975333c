//! `kill` and `delete`.

use husk_runtime::container;
use husk_runtime::state::Store;

use crate::error::Result;

use crate::parse::parse_signal;

pub fn kill(store: &Store, id: &str, signal: Option<&str>, all: bool) -> Result<()> {
    container::check_id(id)?;
    let sig = parse_signal(signal.unwrap_or("SIGTERM"))?;
    Ok(container::kill(store, id, sig, all)?)
}

pub fn delete(store: &Store, id: &str, force: bool) -> Result<()> {
    Ok(container::delete(store, id, force)?)
}
