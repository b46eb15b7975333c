//! The agent's side of a request: a frame body from a hostile host through
//! the envelope checks (`decode_request`: JSON, version, request type,
//! fields) to a typed request, then the validation the runtime does
//! before touching anything (ids, the OCI spec's plan, the process, the
//! cgroup resource writes, the network configuration). Nothing is
//! executed: no container, mount, cgroup or netlink call.
#![no_main]

use std::path::Path;

use husk_agent::container::cgroup::resource_writes;
use husk_agent::container::spec::{check_id, plan_create, plan_process, Env};
use husk_agent::server::dispatch::decode_request;
use husk_protocol::Request;
use libfuzzer_sys::fuzz_target;

fn env() -> Env {
    Env {
        filesystems: [
            "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup2", "overlay",
        ]
        .map(String::from)
        .to_vec(),
        bundle: None,
    }
}

fuzz_target!(|body: &[u8]| {
    let frame = match decode_request(body) {
        Ok(f) => f,
        Err(reply) => {
            // Every refusal is an error reply.
            assert!(matches!(reply.response, husk_protocol::Response::Error(_)));
            return;
        }
    };
    let mut warnings = Vec::new();
    match &frame.request {
        Request::CreateContainer { id, spec, .. } => {
            let _ = husk_agent::net::check_spec(spec, false);
            let _ = husk_agent::net::check_spec(spec, true);
            let _ = plan_create(id, spec, Path::new("/"), &env());
        }
        Request::Exec {
            exec_id, process, ..
        } => {
            if check_id(exec_id, "exec_id").is_ok() {
                let _ = plan_process(process, "process", &mut warnings);
            }
        }
        Request::UpdateResources { resources, .. } => {
            let _ = resource_writes(resources, &mut warnings);
        }
        Request::ConfigureNetwork { network } => {
            let _ = network.validate();
        }
        _ => {}
    }
    let _ = frame.request.name();
});
