//! The io controller: `blockIO.weight` and `weightDevice` -> io.weight
//! (runc's 10..1000 -> 1..10000 conversion), the four throttle lists ->
//! io.max (`rbps`, `wbps`, `riops`, `wiops`; rate 0: unlimited).

use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};

use super::resources::{dev_num, ignored, w, Write1, FIELD};
use crate::container::error::SpecError;

pub fn writes(b: &LinuxBlockIo, warnings: &mut Vec<String>) -> Result<Vec<Write1>, SpecError> {
    let bf = format!("{FIELD}.blockIO");
    let mut out = Vec::new();
    if let Some(wt) = b.weight().filter(|w| *w != 0) {
        let field = format!("{bf}.weight");
        let v = weight(wt, &field)?;
        out.push(w("io.weight", format!("default {v}"), &field));
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        let field = format!("{bf}.weightDevice[{i}]");
        dev_num(d.major(), d.minor(), &field)?;
        if let Some(wt) = d.weight() {
            let v = weight(wt, &format!("{field}.weight"))?;
            out.push(w(
                "io.weight",
                format!("{}:{} {v}", d.major(), d.minor()),
                &field,
            ));
        }
    }
    let throttles = [
        (
            "throttleReadBpsDevice",
            "rbps",
            b.throttle_read_bps_device(),
        ),
        (
            "throttleWriteBpsDevice",
            "wbps",
            b.throttle_write_bps_device(),
        ),
        (
            "throttleReadIOPSDevice",
            "riops",
            b.throttle_read_iops_device(),
        ),
        (
            "throttleWriteIOPSDevice",
            "wiops",
            b.throttle_write_iops_device(),
        ),
    ];
    for (name, key, list) in throttles {
        for (i, d) in list.iter().flatten().enumerate() {
            out.push(throttle(d, key, &format!("{bf}.{name}[{i}]"))?);
        }
    }
    if b.leaf_weight().is_some() {
        warnings.push(ignored(&format!("{bf}.leafWeight")));
    }
    Ok(out)
}

/// io.weight (1..10000) of a blkio weight (10..1000).
fn weight(wt: u16, field: &str) -> Result<u64, SpecError> {
    if !(10..=1000).contains(&wt) {
        return Err(SpecError::out_of_range(field, wt, "10..1000"));
    }
    Ok(1 + (u64::from(wt) - 10) * 9999 / 990)
}

/// One io.max line: `MAJ:MIN KEY=RATE`.
fn throttle(d: &LinuxThrottleDevice, key: &str, field: &str) -> Result<Write1, SpecError> {
    dev_num(d.major(), d.minor(), field)?;
    let rate = if d.rate() == 0 {
        "max".to_string()
    } else {
        d.rate().to_string()
    };
    Ok(w(
        "io.max",
        format!("{}:{} {key}={rate}", d.major(), d.minor()),
        field,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::resources::testing::{assert_writes, parse};
    use super::*;

    fn run(json: &str) -> Result<Vec<Write1>, SpecError> {
        writes(&parse(json), &mut Vec::new())
    }

    #[test]
    fn weights() {
        assert_writes(
            &run(r#"{"weight":10}"#).unwrap(),
            &[("io.weight", "default 1")],
        );
        assert_writes(
            &run(r#"{"weight":1000,"weightDevice":[{"major":8,"minor":0,"weight":500}]}"#).unwrap(),
            &[("io.weight", "default 10000"), ("io.weight", "8:0 4950")],
        );
        assert!(run(r#"{"weight":0}"#).unwrap().is_empty());
        assert_eq!(
            run(r#"{"weight":5}"#).unwrap_err().to_string(),
            "linux.resources.blockIO.weight: 5 is outside 10..1000"
        );
        assert_eq!(
            run(r#"{"weightDevice":[{"major":8,"minor":0,"weight":2000}]}"#)
                .unwrap_err()
                .to_string(),
            "linux.resources.blockIO.weightDevice[0].weight: 2000 is outside 10..1000"
        );
    }

    #[test]
    fn throttles() {
        let ws = run(
            r#"{"throttleReadBpsDevice":[{"major":254,"minor":0,"rate":1048576}],
            "throttleWriteBpsDevice":[{"major":254,"minor":0,"rate":0}],
            "throttleReadIOPSDevice":[{"major":8,"minor":16,"rate":100}],
            "throttleWriteIOPSDevice":[{"major":8,"minor":16,"rate":50}]}"#,
        )
        .unwrap();
        assert_writes(
            &ws,
            &[
                ("io.max", "254:0 rbps=1048576"),
                ("io.max", "254:0 wbps=max"),
                ("io.max", "8:16 riops=100"),
                ("io.max", "8:16 wiops=50"),
            ],
        );
        assert_eq!(
            run(r#"{"throttleWriteIOPSDevice":[{"major":1,"minor":1,"rate":1},{"major":-1,"minor":0,"rate":1}]}"#)
                .unwrap_err()
                .to_string(),
            "linux.resources.blockIO.throttleWriteIOPSDevice[1]: device -1:0 is negative or too large"
        );
    }

    #[test]
    fn leaf_weight_is_warned_about() {
        let mut warnings = Vec::new();
        writes(&parse(r#"{"leafWeight":10}"#), &mut warnings).unwrap();
        assert_eq!(
            warnings,
            ["linux.resources.blockIO.leafWeight ignored: no cgroup v2 equivalent"]
        );
    }
}
