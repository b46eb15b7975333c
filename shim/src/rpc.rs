//! The ttrpc Task service: each request checked and handed to
//! [`TaskService`]'s methods, each answer built from what they return.

use containerd_shim::api::{self, Empty};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::shim::shim_ttrpc::Task;
use containerd_shim::protos::types::task::{ProcessInfo, Status as TaskStatus};
use containerd_shim::{TtrpcContext, TtrpcResult};
use husk_protocol::oci;
use husk_runtime::container;

use crate::convert::{self, timestamp};
use crate::error::ShimError;
use crate::task::TaskService;

impl TaskService {
    fn state_of(&self, req: &api::StateRequest) -> Result<api::StateResponse, ShimError> {
        let p = self.proc(&req.id, &req.exec_id)?;
        let exit = p.exit();
        let status = match (&exit, req.exec_id.is_empty()) {
            (Some(_), _) => TaskStatus::STOPPED,
            (None, true) => {
                let st = self.store().load(&req.id)?;
                convert::task_status(container::live_status(self.store(), &st))
            }
            (None, false) if p.has_started() => TaskStatus::RUNNING,
            (None, false) => TaskStatus::CREATED,
        };
        let bundle = self
            .store()
            .load(&req.id)
            .map(|st| st.bundle.display().to_string())
            .unwrap_or_default();
        Ok(api::StateResponse {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            bundle,
            pid: p.pid_u32(),
            status: status.into(),
            stdin: p.io.stdin.clone(),
            stdout: p.io.stdout.clone(),
            stderr: p.io.stderr.clone(),
            terminal: p.io.terminal,
            exit_status: exit.map_or(0, |e| e.status),
            exited_at: exit
                .map_or_else(MessageField::none, |e| MessageField::some(timestamp(e.at))),
            ..Default::default()
        })
    }

    fn pids_of(&self, id: &str) -> Result<api::PidsResponse, ShimError> {
        let init = self.proc(id, "")?;
        let mut processes = Vec::new();
        for p in std::iter::once(init).chain(self.execs()) {
            if p.pid() > 0 && p.exit().is_none() {
                processes.push(ProcessInfo {
                    pid: p.pid_u32(),
                    ..Default::default()
                });
            }
        }
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn stats_of(&self, id: &str) -> Result<api::StatsResponse, ShimError> {
        self.proc(id, "")?;
        let st = container::running(self.store(), id)?;
        let s = container::stats(self.store(), &st)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(convert::metrics_any(&s)?),
            ..Default::default()
        })
    }

    fn update_of(&self, req: &api::UpdateTaskRequest) -> Result<(), ShimError> {
        self.proc(&req.id, "")?;
        let res: oci::LinuxResources = convert::json_any("resources", req.resources.as_ref())?;
        Ok(container::update(self.store(), &req.id, res)?)
    }
}

impl Task for TaskService {
    fn state(&self, _: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        Ok(self.state_of(&req)?)
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let pid = self.create(&req)?;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        let pid = self.start(&req.id, &req.exec_id)?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let (pid, e) = self.delete(&req.id, &req.exec_id)?;
        Ok(api::DeleteResponse {
            pid,
            exit_status: e.status,
            exited_at: MessageField::some(timestamp(e.at)),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        Ok(self.pids_of(&req.id)?)
    }

    fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        self.pause(&req.id, true)?;
        Ok(Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        self.pause(&req.id, false)?;
        Ok(Empty::new())
    }

    fn checkpoint(&self, _: &TtrpcContext, _: api::CheckpointTaskRequest) -> TtrpcResult<Empty> {
        Err(ShimError::Unsupported(
            "checkpoint: husk does not checkpoint containers (their state is a whole microVM)",
        )
        .into())
    }

    fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        self.kill(&req.id, &req.exec_id, req.signal, req.all)?;
        Ok(Empty::new())
    }

    fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        self.exec(&req)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        let p = self.proc(&req.id, &req.exec_id)?;
        p.with_relay(|r| r.resize(req.width, req.height))
            .transpose()?;
        Ok(Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        let p = self.proc(&req.id, &req.exec_id)?;
        if req.stdin {
            p.with_relay(|r| r.close_stdin());
        }
        Ok(Empty::new())
    }

    fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        self.update_of(&req)?;
        Ok(Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let p = self.proc(&req.id, &req.exec_id)?;
        let e = p.wait();
        Ok(api::WaitResponse {
            exit_status: e.status,
            exited_at: MessageField::some(timestamp(e.at)),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        Ok(self.stats_of(&req.id)?)
    }

    fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.proc(&req.id, "").map_or(0, |p| p.pid_u32());
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        // A shim with a container still to serve stays, unless told now.
        if self.idle() || req.now {
            containerd_shim::info!("shutdown ({})", self.namespace());
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}
