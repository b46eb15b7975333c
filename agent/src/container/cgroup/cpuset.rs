//! The cpuset controller: `cpu.cpus` -> cpuset.cpus, `cpu.mems` ->
//! cpuset.mems (kernel CPU/node lists such as `0-3,5`).

use oci_spec::runtime::LinuxCpu;

use super::resources::{w, Write1, FIELD};
use crate::container::error::SpecError;

pub fn writes(c: &LinuxCpu) -> Result<Vec<Write1>, SpecError> {
    let mut out = Vec::new();
    for (name, v) in [("cpus", c.cpus()), ("mems", c.mems())] {
        if let Some(v) = v {
            let field = format!("{FIELD}.cpu.{name}");
            if !is_list(v) {
                return Err(SpecError::invalid(
                    field,
                    format!("{v:?} is not a CPU/node list"),
                ));
            }
            out.push(w(&format!("cpuset.{name}"), v.clone(), &field));
        }
    }
    Ok(out)
}

/// Only digits, ',' and '-' (the kernel checks the rest).
fn is_list(v: &str) -> bool {
    v.chars()
        .all(|ch| ch.is_ascii_digit() || ch == ',' || ch == '-')
}

#[cfg(test)]
mod tests {
    use super::super::resources::testing::{assert_writes, parse};
    use super::*;

    #[test]
    fn lists() {
        let ws = writes(&parse(r#"{"cpus":"0-1,3","mems":"0"}"#)).unwrap();
        assert_writes(&ws, &[("cpuset.cpus", "0-1,3"), ("cpuset.mems", "0")]);
        assert!(writes(&parse(r#"{"shares":2}"#)).unwrap().is_empty());
        assert_eq!(
            writes(&parse(r#"{"cpus":"0;1"}"#)).unwrap_err().to_string(),
            "linux.resources.cpu.cpus: \"0;1\" is not a CPU/node list"
        );
        assert!(writes(&parse(r#"{"mems":"0 1"}"#))
            .unwrap_err()
            .to_string()
            .starts_with("linux.resources.cpu.mems:"));
    }
}
