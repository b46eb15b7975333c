//! The shim binary's side of containerd's protocol: `start` (start the
//! server for a container, print its ttrpc address), `delete` (clean up
//! after a shim that died) and the server's life.
//!
//! One shim serves one container for now (grouped by the task id);
//! grouping a pod's containers under one shim by the CRI sandbox-id
//! annotation (`io.kubernetes.cri.sandbox-id`) is the later goal.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{Config, ExitSignal, Flags, StartOpts};
use husk_runtime::container;
use husk_runtime::state::Store;

use crate::convert::timestamp;
use crate::mount::unmount_rootfs;
use crate::task::TaskService;

/// Where shims keep the state of their containers, per namespace.
pub const STATE_ROOT: &str = "/run/husk-shim";

/// The state store of namespace `ns`, created 0700.
pub fn store_of(ns: &str) -> std::io::Result<Store> {
    if ns.is_empty() || ns.contains('/') || ns.starts_with('.') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("namespace {ns:?}: not a valid directory name"),
        ));
    }
    let root = Path::new(STATE_ROOT);
    let dir = root.join(ns);
    std::fs::create_dir_all(&dir)?;
    for d in [root, dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(Store::new(dir))
}

pub struct Service {
    namespace: String,
    id: String,
    debug: bool,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for Service {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        Service {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            debug: args.debug,
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = opts.id.clone();
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        write_address(&address)?;
        Ok(address)
    }

    /// `delete`: the shim server died; stop and remove what is left of
    /// the container (its monitor, VM, state, rootfs mount).
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let store = store_of(&self.namespace)
            .map_err(|e| containerd_shim::Error::Other(format!("state root: {e}")))?;
        if store.load(&self.id).is_ok() {
            let _ = container::kill(&store, &self.id, libc::SIGKILL, true);
            if let Err(e) = container::delete(&store, &self.id, true) {
                containerd_shim::warn!("delete {}: {e}", self.id);
            }
        }
        unmount_rootfs(&self.bundle);
        Ok(DeleteResponse {
            pid: 0,
            exit_status: 128 + 9,
            exited_at: containerd_shim::protos::protobuf::MessageField::some(timestamp(
                std::time::SystemTime::now(),
            )),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let store = match store_of(&self.namespace) {
            Ok(s) => s,
            Err(e) => {
                containerd_shim::error!("state root for {}: {e}", self.namespace);
                Store::new(Path::new(STATE_ROOT).join("invalid"))
            }
        };
        TaskService::new(
            self.namespace.clone(),
            store,
            publisher,
            self.exit.clone(),
            self.debug,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_directory_names() {
        for bad in ["", "a/b", "..", ".x"] {
            assert!(store_of(bad).is_err(), "{bad}");
        }
    }
}
