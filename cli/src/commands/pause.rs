//! `pause` and `resume`.

use husk_runtime::container;
use husk_runtime::state::Store;
use husk_runtime::util::Result;

pub fn pause(store: &Store, id: &str, pause: bool) -> Result<()> {
    container::pause(store, id, pause)
}
