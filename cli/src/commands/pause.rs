//! `pause` and `resume`.

use husk_runtime::container;
use husk_runtime::state::Store;

use crate::error::Result;

pub fn pause(store: &Store, id: &str, pause: bool) -> Result<()> {
    Ok(container::pause(store, id, pause)?)
}
