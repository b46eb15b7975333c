//! The reply to one request frame: the envelope checks of the error
//! policy (see the module above), then the request itself, carried out on
//! the [`Runtime`].

use husk_protocol::{
    decode_body, ErrorCode, ErrorInfo, FrameError, FrameHeader, Request, RequestFrame, Response,
    PROTOCOL_VERSION,
};

use super::{Reply, Then};
use crate::log::debug;
use crate::runtime::{Runtime, RuntimeError};

pub(super) fn error(id: u64, code: ErrorCode, message: impl Into<String>, then: Then) -> Reply {
    Reply {
        id,
        response: Response::Error(ErrorInfo::new(code, message)),
        then,
    }
}

/// Decides the reply to one frame body. Never panics on any input.
pub fn handle_body(body: &[u8], rt: &Runtime) -> Reply {
    let frame = match decode_request(body) {
        Ok(f) => f,
        Err(reply) => return *reply,
    };
    let id = frame.id;
    debug!("request {id}: {}", frame.request.name());
    match frame.request {
        Request::Ping => Reply {
            id,
            response: Response::Pong(crate::sysinfo::ping_info()),
            then: Then::Continue,
        },
        Request::Shutdown => Reply {
            id,
            response: Response::Ok,
            then: Then::Shutdown,
        },
        req @ (Request::Events | Request::AttachStdio { .. }) => {
            let job = match req {
                Request::AttachStdio {
                    id: cid,
                    exec_id,
                    stream,
                } => rt.claim(&cid, exec_id.as_deref(), stream),
                _ => Ok(rt.subscribe()),
            };
            let job = job.map_err(ErrorInfo::from);
            match job {
                Ok(job) => Reply {
                    id,
                    response: Response::Ok,
                    then: Then::Stream(job),
                },
                Err(e) => Reply {
                    id,
                    response: Response::Error(e),
                    then: Then::Continue,
                },
            }
        }
        req => match container_request(req, rt) {
            Some(Ok(response)) => Reply {
                id,
                response,
                then: Then::Continue,
            },
            Some(Err(e)) => Reply {
                id,
                response: Response::Error(e),
                then: Then::Continue,
            },
            None => error(
                id,
                ErrorCode::UnknownRequest,
                "request is not implemented by this agent",
                Then::Continue,
            ),
        },
    }
}

/// The envelope checks of the error policy (see the module above): the
/// body as a typed request frame, or the error reply it gets. Pure (no
/// [`Runtime`]), so that the fuzz targets (`fuzz/`) reach it; never panics
/// on any input.
pub fn decode_request(body: &[u8]) -> Result<RequestFrame, Box<Reply>> {
    let header: FrameHeader = match decode_body(body) {
        Ok(h) => h,
        Err(e) => {
            return Err(Box::new(error(
                0,
                ErrorCode::BadRequest,
                e.to_string(),
                Then::Close,
            )))
        }
    };
    if header.version != PROTOCOL_VERSION {
        return Err(Box::new(error(
            header.id,
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} not supported; this agent speaks {PROTOCOL_VERSION}",
                header.version
            ),
            Then::Continue,
        )));
    }
    let frame: RequestFrame = match decode_body(body) {
        Ok(f) => f,
        Err(FrameError::Json(e)) if is_unknown_type(body, &e.to_string()) => {
            return Err(Box::new(error(
                header.id,
                ErrorCode::UnknownRequest,
                format!("invalid request: {e}"),
                Then::Continue,
            )));
        }
        Err(e) => {
            // The JSON error alone: it names the bad field.
            let msg = match e {
                FrameError::Json(j) => j.to_string(),
                e => e.to_string(),
            };
            return Err(Box::new(error(
                header.id,
                ErrorCode::BadRequest,
                msg,
                Then::Continue,
            )));
        }
    };
    Ok(frame)
}

/// Carries out a container request, or the sandbox's network configuration
/// (blocking: `Wait` returns at the exit).
fn container_request(req: Request, rt: &Runtime) -> Option<Result<Response, ErrorInfo>> {
    let ok = |r: Result<(), RuntimeError>| r.map(|()| Response::Ok);
    let res = match req {
        Request::CreateContainer {
            id,
            spec,
            rootfs,
            stdio,
        } => rt
            .create(&id, &spec, &rootfs, stdio)
            .map(|(pid, warnings)| Response::Created { pid, warnings }),
        Request::StartContainer { id } => ok(rt.start(&id)),
        Request::Exec {
            id,
            exec_id,
            process,
            stdio,
        } => rt
            .exec(&id, &exec_id, &process, stdio)
            .map(|(pid, warnings)| Response::Created { pid, warnings }),
        Request::Signal {
            id,
            exec_id,
            signal,
            all,
        } => ok(rt.signal(&id, exec_id.as_deref(), signal, all)),
        Request::Wait { id, exec_id } => rt.wait(&id, exec_id.as_deref()).map(Response::Exited),
        Request::ResizePty {
            id,
            exec_id,
            rows,
            cols,
        } => ok(rt.resize(&id, exec_id.as_deref(), rows, cols)),
        Request::CloseStdin { id, exec_id } => ok(rt.close_stdin(&id, exec_id.as_deref())),
        Request::State { id } => rt.state(&id).map(Response::State),
        Request::Stats { id } => rt.stats(&id).map(Response::Stats),
        Request::Pause { id } => ok(rt.pause(&id, true)),
        Request::Resume { id } => ok(rt.pause(&id, false)),
        Request::UpdateResources { id, resources } => ok(rt.update(&id, &resources)),
        Request::Remove { id, force } => ok(rt.remove(&id, force)),
        Request::ConfigureNetwork { network } => ok(rt.configure_network(&network)),
        _ => return None,
    };
    Some(res.map_err(ErrorInfo::from))
}

/// Whether a decode error is about the request `type` itself (and not an
/// unknown variant deeper down, such as a bad namespace type).
fn is_unknown_type(body: &[u8], msg: &str) -> bool {
    let ty = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("request")?.get("type")?.as_str().map(str::to_owned));
    match ty {
        Some(t) => msg.starts_with(&format!("unknown variant `{t}`")),
        None => false,
    }
}
