//! `husk-bench --check FILE`: is a report complete and are its figures
//! sane? For the VM test that runs `husk-bench --quick`: every section
//! present, every runtime and VMM measured, no figure zero, negative or
//! absurd. It checks completeness, not speed: the goals are figures to
//! read, not pass/fail.

use serde_json::Value;

/// A number at a dotted path (`cpu_ms.median`, `vmms.0.name`) of `v`.
fn num(v: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(v, |v, k| match k.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(k),
        })
        .and_then(Value::as_f64)
}

/// Adds a problem unless `v` is a finite figure strictly between `lo` and `hi`.
fn in_range(p: &mut Vec<String>, v: Option<f64>, what: &str, lo: f64, hi: f64) {
    match v {
        Some(x) if x.is_finite() && x > lo && x < hi => {}
        Some(x) => p.push(format!("{what} = {x}, outside ({lo}, {hi})")),
        None => p.push(format!("{what} missing")),
    }
}

/// Everything wrong with the report `r` (empty: fine).
pub fn problems(r: &Value) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(e) = r.get("errors").and_then(Value::as_array) {
        for e in e {
            p.push(format!("error reported: {}", e.as_str().unwrap_or("?")));
        }
    }
    check_startup(r, &mut p);
    check_boot(r, &mut p);
    check_start(r, &mut p);
    check_overhead(r, &mut p);
    check_density(r, &mut p);
    check_network(r, &mut p);
    check_io(r, &mut p);
    check_goals(r, &mut p);
    p
}

/// VMM start-up, where it was run: every run reached its first KVM_RUN.
/// (Optional: the lab's test leaves it out, see t-bench-quick.sh.)
fn check_startup(r: &Value, p: &mut Vec<String>) {
    match r.get("startup").filter(|s| !s.is_null()) {
        None => {}
        Some(s) => {
            let runs = num(s, "runs").unwrap_or(0.0);
            if num(s, "cpu_ms.n") != Some(runs) {
                p.push(format!("startup: {:?} of {runs} runs", num(s, "cpu_ms.n")));
            }
            in_range(
                p,
                num(s, "cpu_ms.median"),
                "startup CPU to first KVM_RUN ms",
                0.0,
                60e3,
            );
        }
    }
}

/// VM boot: both VMMs, every boot, and the ratio.
fn check_boot(r: &Value, p: &mut Vec<String>) {
    match r.get("boot").filter(|b| !b.is_null()) {
        None => p.push("no boot section".into()),
        Some(b) => {
            let runs = num(b, "runs").unwrap_or(0.0);
            for name in ["husk-vmm", "qemu-microvm"] {
                let v = b["vmms"]
                    .as_array()
                    .and_then(|a| a.iter().find(|v| v["name"] == name));
                let Some(v) = v else {
                    p.push(format!("boot: {name} missing"));
                    continue;
                };
                if num(v, "ready_ms.n") != Some(runs) {
                    p.push(format!(
                        "boot: {name}: {:?} of {runs} boots",
                        num(v, "ready_ms.n")
                    ));
                }
                in_range(
                    p,
                    num(v, "ready_ms.median"),
                    &format!("boot {name} median ms"),
                    0.0,
                    600e3,
                );
                in_range(
                    p,
                    num(v, "guest_uptime_ms.median"),
                    &format!("boot {name} guest uptime ms"),
                    0.0,
                    600e3,
                );
            }
            in_range(p, num(b, "ratio_median"), "boot ratio", 0.0, 100.0);
        }
    }
}

/// Container start: every runtime ran every time, and both ratios.
fn check_start(r: &Value, p: &mut Vec<String>) {
    match r.get("start").filter(|s| !s.is_null()) {
        None => p.push("no start section".into()),
        Some(s) => {
            let runs = num(s, "runs").unwrap_or(0.0);
            for rt in s["runtimes"].as_array().into_iter().flatten() {
                let name = rt["name"].as_str().unwrap_or("?");
                if rt["status"] != "ok" {
                    p.push(format!(
                        "start {name}: {}",
                        rt["status"].as_str().unwrap_or("?")
                    ));
                    continue;
                }
                if num(rt, "exit_ms.n") != Some(runs) {
                    p.push(format!(
                        "start {name}: {:?} of {runs} runs",
                        num(rt, "exit_ms.n")
                    ));
                }
                in_range(
                    p,
                    num(rt, "first_byte_ms.median"),
                    &format!("start {name} first byte ms"),
                    0.0,
                    600e3,
                );
            }
            for rt in ["husk", "crun", "runc"] {
                if !s["runtimes"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["name"] == rt))
                {
                    p.push(format!("start: {rt} missing"));
                }
            }
            for (i, r) in s["ratios"].as_array().into_iter().flatten().enumerate() {
                in_range(
                    p,
                    r.get(2).and_then(Value::as_f64),
                    &format!("start ratio {i} (exit)"),
                    0.0,
                    1000.0,
                );
            }
        }
    }
}

/// Overhead: husk-vmm's memory and start-up CPU; what each runtime leaves.
fn check_overhead(r: &Value, p: &mut Vec<String>) {
    match r.get("overhead").filter(|o| !o.is_null()) {
        None => p.push("no overhead section".into()),
        Some(o) => {
            let husk = o["vmms"]
                .as_array()
                .and_then(|a| a.iter().find(|v| v["name"] == "husk-vmm"));
            match husk {
                None => p.push("overhead: husk-vmm missing".into()),
                Some(h) => {
                    in_range(
                        p,
                        num(h, "host_pss_kib.median"),
                        "husk-vmm host PSS KiB",
                        100.0,
                        1024.0 * 1024.0,
                    );
                    in_range(
                        p,
                        num(h, "guest_ram_pss_kib.median"),
                        "husk-vmm guest RAM PSS KiB",
                        100.0,
                        16.0 * 1024.0 * 1024.0,
                    );
                    in_range(
                        p,
                        num(h, "first_kvm_run_cpu_ms.median"),
                        "husk-vmm CPU to first KVM_RUN ms",
                        0.0,
                        60e3,
                    );
                    in_range(
                        p,
                        num(h, "vmm_own_cpu_ms.median"),
                        "husk-vmm own CPU ms",
                        0.0,
                        600e3,
                    );
                }
            }
            for rt in o["runtimes"].as_array().into_iter().flatten() {
                let name = rt.get(0).and_then(Value::as_str).unwrap_or("?");
                match rt.get(1) {
                    Some(Value::Object(m)) if m.contains_key("Ok") => {
                        in_range(
                            p,
                            num(&m["Ok"], "host_pss_kib"),
                            &format!("overhead {name} host PSS KiB"),
                            0.0,
                            4.0 * 1024.0 * 1024.0,
                        );
                    }
                    other => p.push(format!(
                        "overhead {name}: {}",
                        other.map_or("missing".into(), |v| v.to_string())
                    )),
                }
            }
        }
    }
}

/// Density: every K, every sandbox ready.
fn check_density(r: &Value, p: &mut Vec<String>) {
    match r.get("density").filter(|d| !d.is_null()) {
        None => p.push("no density section".into()),
        Some(d) => {
            let results = d["results"].as_array().cloned().unwrap_or_default();
            if results.is_empty() {
                p.push("density: no K measured".into());
            }
            for x in results {
                let k = x.get(0).and_then(Value::as_u64).unwrap_or(0);
                match x.get(1).and_then(|r| r.get("Ok")) {
                    Some(ok) => {
                        if ok["ready"].as_u64() != Some(k) {
                            p.push(format!("density K={k}: {} ready", ok["ready"]));
                        }
                        in_range(
                            p,
                            num(ok, "all_ready_ms"),
                            &format!("density K={k} all ready ms"),
                            0.0,
                            3600e3,
                        );
                        in_range(
                            p,
                            num(ok, "host_pss_kib.median"),
                            &format!("density K={k} host PSS KiB"),
                            100.0,
                            1024.0 * 1024.0,
                        );
                    }
                    None => p.push(format!(
                        "density K={k}: {}",
                        x.get(1).map_or("missing".into(), |v| v.to_string())
                    )),
                }
            }
        }
    }
}

/// File I/O: every operation timed for husk and runc (10 ms steps: a
/// fast one may read 0) and husk's requests counted (at least one each).
fn check_io(r: &Value, p: &mut Vec<String>) {
    let Some(io) = r.get("io").filter(|n| !n.is_null()) else {
        p.push("no io section".into());
        return;
    };
    let rows = io["rows"].as_array().cloned().unwrap_or_default();
    if rows.len() != 5 {
        p.push(format!("io: {} operations, not 5", rows.len()));
    }
    for x in &rows {
        let op = x["op"].as_str().unwrap_or("?");
        for f in ["husk_ms.median", "runc_ms.median"] {
            in_range(p, num(x, f), &format!("io {op} {f}"), -1.0, 3600e3);
        }
        in_range(
            p,
            num(x, "husk_requests_total"),
            &format!("io {op} husk requests"),
            0.0,
            1e8,
        );
    }
}

/// Network: every peer measured (husk, runc, crun, husk-vmm, QEMU), its
/// figures sane, and the husk/QEMU and husk/runc ratios there.
fn check_network(r: &Value, p: &mut Vec<String>) {
    let Some(n) = r.get("network").filter(|n| !n.is_null()) else {
        p.push("no network section".into());
        return;
    };
    let peers = n["peers"].as_array().cloned().unwrap_or_default();
    for want in ["qemu-microvm", "runc", "crun"] {
        if !peers.iter().any(|x| x["name"] == want) {
            p.push(format!("network: {want} missing"));
        }
    }
    // husk and husk-vmm: once, or once per NIC backend ("husk (vhost)").
    for want in ["husk", "husk-vmm"] {
        let backend = format!("{want} (");
        if !peers.iter().any(|x| {
            x["name"]
                .as_str()
                .is_some_and(|s| s == want || s.starts_with(&backend))
        }) {
            p.push(format!("network: {want} missing"));
        }
    }
    for x in &peers {
        let name = x["name"].as_str().unwrap_or("?");
        if x["status"] != "ok" {
            p.push(format!(
                "network {name}: {}",
                x["status"].as_str().unwrap_or("?")
            ));
            continue;
        }
        for (f, hi) in [
            ("upload_gbps", 1000.0),
            ("download_gbps", 1000.0),
            ("http.requests_per_s", 1e7),
            ("http.p50_ms", 60e3),
            ("http.p99_ms", 60e3),
            ("setup_ms", 600e3),
        ] {
            in_range(p, num(x, f), &format!("network {name} {f}"), 0.0, hi);
        }
        if let (Some(a), Some(b)) = (num(x, "http.p50_ms"), num(x, "http.p99_ms")) {
            if a > b {
                p.push(format!("network {name}: p50 {a} ms over p99 {b} ms"));
            }
        }
    }
    let ratios = n["ratios"].as_array().cloned().unwrap_or_default();
    for want in ["/qemu-microvm", "/runc"] {
        if !ratios.iter().any(|x| {
            x["what"].as_str().is_some_and(|w| {
                w.starts_with("husk") && !w.starts_with("husk-vmm") && w.ends_with(want)
            })
        }) {
            p.push(format!("network: no husk{want} ratio"));
        }
    }
    for x in &ratios {
        let what = x["what"].as_str().unwrap_or("?");
        for f in ["upload", "download", "requests_per_s"] {
            in_range(
                p,
                num(x, f),
                &format!("network ratio {what} {f}"),
                0.0,
                1000.0,
            );
        }
    }
}

/// The three goals, each with a figure.
fn check_goals(r: &Value, p: &mut Vec<String>) {
    let goals = r["goals"].as_array().cloned().unwrap_or_default();
    if goals.len() != 3 {
        p.push(format!("{} goals, want 3", goals.len()));
    }
    for g in goals {
        if g["value"].as_f64().is_none() {
            p.push(format!("goal {} not measured", g["what"]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn net_peer(name: &str, gbps: f64) -> Value {
        json!({"name": name, "status": "ok", "upload_gbps": gbps, "download_gbps": gbps,
               "setup_ms": 2000.0,
               "http": {"requests_per_s": 800.0, "p50_ms": 4.0, "p99_ms": 20.0}})
    }

    fn good() -> Value {
        json!({
            "startup": {"runs": 10, "cpu_ms": {"n": 10, "median": 150.0}},
            "boot": {"runs": 3, "ratio_median": 0.8, "vmms": [
                {"name": "husk-vmm", "ready_ms": {"n": 3, "median": 1900.0}, "guest_uptime_ms": {"median": 1000.0}},
                {"name": "qemu-microvm", "ready_ms": {"n": 3, "median": 2400.0}, "guest_uptime_ms": {"median": 990.0}}
            ]},
            "start": {"runs": 5, "runtimes": [
                {"name": "husk", "status": "ok", "exit_ms": {"n": 5}, "first_byte_ms": {"median": 3000.0}},
                {"name": "crun", "status": "ok", "exit_ms": {"n": 5}, "first_byte_ms": {"median": 200.0}},
                {"name": "runc", "status": "ok", "exit_ms": {"n": 5}, "first_byte_ms": {"median": 400.0}}
            ], "ratios": [["husk/crun", 15.0, 14.0], ["husk/runc", 7.0, 6.5]]},
            "overhead": {
                "vmms": [{"name": "husk-vmm", "host_pss_kib": {"median": 2100.0},
                          "guest_ram_pss_kib": {"median": 30000.0},
                          "first_kvm_run_cpu_ms": {"median": 400.0},
                          "vmm_own_cpu_ms": {"median": 600.0}}],
                "runtimes": [["husk", {"Ok": {"host_pss_kib": 16000}}],
                             ["crun", {"Ok": {"host_pss_kib": 1400}}]]
            },
            "density": {"results": [[5, {"Ok": {"ready": 5, "all_ready_ms": 8000.0, "host_pss_kib": {"median": 400.0}}}]]},
            "network": {"peers": [
                net_peer("husk (virtio)", 2.0), net_peer("husk (vhost)", 4.0),
                net_peer("qemu-microvm", 3.0), net_peer("husk-vmm", 2.5),
                net_peer("runc", 9.0), net_peer("crun", 9.5)
            ], "ratios": [
                {"what": "husk (virtio)/qemu-microvm", "upload": 0.7, "download": 0.6, "requests_per_s": 0.9},
                {"what": "husk (virtio)/runc", "upload": 0.2, "download": 0.2, "requests_per_s": 0.3},
                {"what": "husk-vmm/qemu-microvm", "upload": 0.8, "download": 0.9, "requests_per_s": 1.1}
            ]},
            "io": {"rows": (["find", "read-small", "read-big", "create-small", "write-big"]
                .iter()
                .map(|op| json!({"op": op, "husk_ms": {"median": 800.0},
                                 "runc_ms": {"median": 0.0}, "husk_requests_total": 4100}))
                .collect::<Vec<_>>())},
            "goals": [{"what": "a", "value": 0.8}, {"what": "b", "value": 2.0}, {"what": "c", "value": 400.0}],
            "errors": []
        })
    }

    #[test]
    fn a_complete_report_passes() {
        assert_eq!(problems(&good()), Vec::<String>::new());
    }

    #[test]
    fn gaps_and_absurd_figures_are_named() {
        let mut r = good();
        r["boot"]["vmms"][1]["ready_ms"]["n"] = json!(2);
        r["start"]["runtimes"][0]["status"] = json!("failed: run 1: boom");
        r["overhead"]["vmms"][0]["host_pss_kib"]["median"] = json!(0.0);
        r["density"]["results"][0][1] = json!({"Err": "no sandbox of 5 got ready"});
        r["io"]["rows"][1]["husk_requests_total"] = json!(0);
        r["goals"][2]["value"] = Value::Null;
        r["startup"]["cpu_ms"]["n"] = json!(9);
        r["errors"] = json!(["start husk: failed"]);
        r["network"]["peers"][2]["status"] = json!("failed: no agent");
        r["network"]["peers"][4]["http"]["p50_ms"] = json!(99.0);
        r["network"]["ratios"][1]["what"] = json!("husk (virtio)/crun");
        let p = problems(&r).join("\n");
        for want in [
            "boot: qemu-microvm",
            "start husk: failed: run 1: boom",
            "husk-vmm host PSS KiB = 0",
            "density K=5",
            "goal \"c\" not measured",
            "error reported: start husk: failed",
            "startup: Some(9.0) of 10 runs",
            "network qemu-microvm: failed: no agent",
            "network runc: p50 99 ms over p99 20 ms",
            "network: no husk/runc ratio",
            "io read-small husk requests = 0",
        ] {
            assert!(p.contains(want), "{want:?} not in:\n{p}");
        }
        r["start"] = Value::Null;
        assert!(problems(&r).iter().any(|x| x == "no start section"));
        r["network"] = Value::Null;
        assert!(problems(&r).iter().any(|x| x == "no network section"));
    }
}
