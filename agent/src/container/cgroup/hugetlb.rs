//! The hugetlb controller: each `hugepageLimits[i]` -> hugetlb.SIZE.max.

use oci_spec::runtime::LinuxHugepageLimit;

use super::resources::{limit, w, Write1, FIELD};
use crate::container::error::SpecError;

pub fn writes(limits: &[LinuxHugepageLimit]) -> Result<Vec<Write1>, SpecError> {
    let mut out = Vec::new();
    for (i, h) in limits.iter().enumerate() {
        let field = format!("{FIELD}.hugepageLimits[{i}]");
        let size = h.page_size();
        if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(SpecError::invalid(
                format!("{field}.pageSize"),
                format!("{size:?} is not a page size"),
            ));
        }
        let v = limit(h.limit(), &format!("{field}.limit"))?;
        out.push(w(&format!("hugetlb.{size}.max"), v, &field));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::resources::testing::{assert_writes, parse};
    use super::*;

    fn run(json: &str) -> Result<Vec<Write1>, SpecError> {
        writes(&parse::<Vec<LinuxHugepageLimit>>(json))
    }

    #[test]
    fn page_sizes() {
        assert_writes(
            &run(r#"[{"pageSize":"2MB","limit":4194304},{"pageSize":"1GB","limit":-1}]"#).unwrap(),
            &[("hugetlb.2MB.max", "4194304"), ("hugetlb.1GB.max", "max")],
        );
        assert_eq!(
            run(r#"[{"pageSize":"2MB","limit":1},{"pageSize":"../x","limit":1}]"#)
                .unwrap_err()
                .to_string(),
            "linux.resources.hugepageLimits[1].pageSize: \"../x\" is not a page size"
        );
        assert!(run(r#"[{"pageSize":"","limit":1}]"#).is_err());
        assert!(run(r#"[{"pageSize":"2MB","limit":-2}]"#)
            .unwrap_err()
            .to_string()
            .starts_with("linux.resources.hugepageLimits[0].limit: -2 is negative"));
    }
}
