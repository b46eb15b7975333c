//! `unified`: interface files written as they are given, in name order;
//! only a controller's files (`CONTROLLER.FILE`), never `cgroup.*` ones or
//! paths.

use std::collections::HashMap;

use super::resources::{w, Write1, FIELD};
use crate::container::error::SpecError;

pub fn writes(u: &HashMap<String, String>) -> Result<Vec<Write1>, SpecError> {
    let mut keys: Vec<_> = u.iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (k, v) in keys {
        let field = format!("{FIELD}.unified.{k}");
        if !is_controller_file(k) {
            return Err(SpecError::invalid(field, "not a controller interface file"));
        }
        out.push(w(k, v.clone(), &field));
    }
    Ok(out)
}

fn is_controller_file(k: &str) -> bool {
    !k.is_empty()
        && !k.contains('/')
        && !k.starts_with('.')
        && k.contains('.')
        && !k.starts_with("cgroup.")
}

#[cfg(test)]
mod tests {
    use super::super::resources::testing::{assert_writes, parse};
    use super::*;

    fn run(json: &str) -> Result<Vec<Write1>, SpecError> {
        writes(&parse::<HashMap<String, String>>(json))
    }

    #[test]
    fn controller_files_only() {
        assert_writes(
            &run(r#"{"memory.high":"1G","cpu.weight":"5"}"#).unwrap(),
            &[("cpu.weight", "5"), ("memory.high", "1G")],
        );
        for bad in ["../x", "cgroup.procs", ".hidden", "nodot", ""] {
            let e = run(&format!(r#"{{"{bad}":"1"}}"#)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("linux.resources.unified.{bad}: not a controller interface file")
            );
        }
    }
}
