//! The rdma controller: each device of `rdma` -> an rdma.max line
//! (`DEV hca_handle=N hca_object=N`), in device-name order.

use std::collections::HashMap;

use oci_spec::runtime::LinuxRdma;

use super::resources::{w, Write1, FIELD};
use crate::container::error::SpecError;

pub fn writes(devs: &HashMap<String, LinuxRdma>) -> Result<Vec<Write1>, SpecError> {
    let mut devs: Vec<_> = devs.iter().collect();
    devs.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (dev, l) in devs {
        let field = format!("{FIELD}.rdma.{dev}");
        if dev.is_empty() || dev.contains(char::is_whitespace) {
            return Err(SpecError::invalid(field, "bad device name"));
        }
        let mut v = dev.clone();
        if let Some(h) = l.hca_handles() {
            v.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = l.hca_objects() {
            v.push_str(&format!(" hca_object={o}"));
        }
        out.push(w("rdma.max", v, &field));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::resources::testing::{assert_writes, parse};
    use super::*;

    fn run(json: &str) -> Result<Vec<Write1>, SpecError> {
        writes(&parse::<HashMap<String, LinuxRdma>>(json))
    }

    #[test]
    fn devices_in_name_order() {
        assert_writes(
            &run(r#"{"mlx5_1":{"hcaObjects":10},"mlx5_0":{"hcaHandles":3,"hcaObjects":20}}"#)
                .unwrap(),
            &[
                ("rdma.max", "mlx5_0 hca_handle=3 hca_object=20"),
                ("rdma.max", "mlx5_1 hca_object=10"),
            ],
        );
        assert_writes(&run(r#"{"d":{}}"#).unwrap(), &[("rdma.max", "d")]);
        assert_eq!(
            run(r#"{"a b":{}}"#).unwrap_err().to_string(),
            "linux.resources.rdma.a b: bad device name"
        );
    }
}
