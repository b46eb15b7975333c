//! The pids controller: `pids.limit` -> pids.max (0 or -1: unlimited).

use oci_spec::runtime::LinuxPids;

use super::resources::{w, Write1, FIELD};
use crate::container::error::SpecError;

pub fn writes(p: &LinuxPids) -> Result<Vec<Write1>, SpecError> {
    let field = format!("{FIELD}.pids.limit");
    let v = match p.limit() {
        0 | -1 => "max".to_string(),
        l if l < 0 => return Err(SpecError::negative(field, l)),
        l => l.to_string(),
    };
    Ok(vec![w("pids.max", v, &field)])
}

#[cfg(test)]
mod tests {
    use super::super::resources::testing::{assert_writes, parse};
    use super::*;

    #[test]
    fn limits() {
        for (limit, want) in [("10", "10"), ("0", "max"), ("-1", "max")] {
            let ws = writes(&parse(&format!(r#"{{"limit":{limit}}}"#))).unwrap();
            assert_writes(&ws, &[("pids.max", want)]);
        }
        assert_eq!(
            writes(&parse(r#"{"limit":-3}"#)).unwrap_err().to_string(),
            "linux.resources.pids.limit: -3 is negative (only -1, unlimited, is allowed)"
        );
    }
}
