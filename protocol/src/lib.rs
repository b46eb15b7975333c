//! Host <-> guest-agent protocol of husk.
//!
//! # Wire format
//!
//! The transport is a byte stream (virtio-vsock inside the guest; on the host a
//! Unix socket after the Firecracker `CONNECT <port>` handshake, see
//! [`client`]). Each message is one *frame*: a 4-byte big-endian length `N`
//! (`1 <= N <= MAX_FRAME`) followed by `N` bytes of UTF-8 JSON. See [`frame`].
//!
//! The host sends [`RequestFrame`]s, the agent answers each with exactly one
//! [`ResponseFrame`] carrying the same `id`:
//!
//! ```json
//! {"version":1,"id":7,"request":{"type":"ping"}}
//! {"version":1,"id":7,"response":{"type":"pong","agent_version":"0.1.0",...}}
//! {"version":1,"id":8,"response":{"type":"error","code":"bad_request","message":"..."}}
//! ```
//!
//! # Tagging (why internally tagged)
//!
//! [`Request`] and [`Response`] are *internally tagged* with a `"type"` field and
//! `snake_case` variant names; a variant's payload fields sit next to the tag.
//! This keeps every request an object (`{"type":"ping"}`), whether or not the
//! variant has fields, so new variants (`create_container`, `exec`,
//! `signal`, `wait`, ...) are added without changing the shape of existing
//! ones, and a peer can always read the `type` of a message it does not know.
//! Payload-carrying variants must therefore be struct variants or newtypes of
//! structs (serde cannot internally tag a newtype of a non-struct).
//!
//! # Compatibility rules
//!
//! * Unknown *fields* are ignored (serde's default), so adding an optional field
//!   (with `#[serde(default)]`) is backwards compatible.
//! * An unknown request `type` is answered with
//!   `Error{code: unknown_request}` and the connection stays usable.
//! * A frame whose `version` differs from [`PROTOCOL_VERSION`] is answered with
//!   `Error{code: unsupported_version}` (echoing its `id`).
//! * Unknown [`ErrorCode`]s deserialize to [`ErrorCode::Unknown`].

use serde::{Deserialize, Serialize};

pub mod client;
pub mod container;
pub mod frame;
pub mod handshake;
pub mod id;
pub mod net;
mod printable;
pub mod vsock;

pub use printable::printable;

pub use container::{
    ContainerState, ContainerStats, ContainerStatus, Event, ExitInfo, RootfsSource, StdioConfig,
    StdioStream,
};
/// The OCI runtime-spec types carried by container requests.
pub use oci_spec::runtime as oci;

pub use frame::{
    decode_body, encode_frame, read_frame, read_frame_body, write_frame, FrameDecoder, FrameError,
};

/// Version of the protocol spoken by this crate; carried in every frame.
pub const PROTOCOL_VERSION: u32 = 1;

/// vsock port the agent listens on inside the guest.
pub const AGENT_PORT: u32 = 1024;

/// Host vsock port the agent connects to (and at once disconnects from)
/// once it listens on [`AGENT_PORT`]: a host waiting for a booting agent
/// listens there instead of polling [`AGENT_PORT`], whose every early
/// attempt costs the booting guest a REQUEST and a RST. Behind husk-vmm's
/// Unix-socket backend that is `<uds>_1025` ([`client::ReadyListener`]).
pub const READY_PORT: u32 = 1025;

/// How long a host waiting for the [`READY_PORT`] signal goes without it
/// before it also polls [`AGENT_PORT`] (for an agent that sends none). Not
/// sooner: the agent listens a moment before it signals, so an early poll
/// races the signal (and costs a booting guest a REQUEST and a RST per
/// try).
pub const READY_FALLBACK_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest frame body (the JSON after the 4-byte length prefix), in bytes.
pub const MAX_FRAME: usize = 1 << 20;

/// Size of the big-endian length prefix of a frame.
pub const LEN_PREFIX: usize = 4;

/// Longest [`ErrorInfo::message`] the agent produces (it may quote peer input).
pub const MAX_ERROR_MESSAGE: usize = 512;

/// A request from the host, wrapped with its version and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub version: u32,
    pub id: u64,
    pub request: Request,
}

impl RequestFrame {
    /// A frame of the current [`PROTOCOL_VERSION`].
    pub fn new(id: u64, request: Request) -> Self {
        RequestFrame {
            version: PROTOCOL_VERSION,
            id,
            request,
        }
    }
}

/// The agent's answer to the [`RequestFrame`] with the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub version: u32,
    pub id: u64,
    pub response: Response,
}

impl ResponseFrame {
    /// A frame of the current [`PROTOCOL_VERSION`].
    pub fn new(id: u64, response: Response) -> Self {
        ResponseFrame {
            version: PROTOCOL_VERSION,
            id,
            response,
        }
    }
}

/// Only the envelope of a request: enough to answer a request whose body is
/// not understood (wrong version, unknown type) with the right `id`.
/// Every other field is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct FrameHeader {
    pub version: u32,
    pub id: u64,
}

/// Requests from the host to the agent (internally tagged by `"type"`).
///
/// Container requests name the container by `id` and, where a process is
/// meant, an exec by `exec_id` (absent: the container's init). Ids match
/// `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Liveness and basic facts about the guest; answered with [`Response::Pong`].
    Ping,
    /// Power the guest off. Answered with [`Response::Ok`] before the agent
    /// syncs and reboots the VM (the VMM exits on the reset).
    Shutdown,
    /// Create a container from an OCI runtime spec: namespaces, cgroup,
    /// root file system; its process waits for [`Request::StartContainer`].
    /// `spec.root.path` is replaced by `rootfs`. Answered with
    /// [`Response::Created`].
    CreateContainer {
        id: String,
        #[serde(deserialize_with = "de_spec")]
        spec: Box<oci::Spec>,
        rootfs: RootfsSource,
        #[serde(default)]
        stdio: StdioConfig,
    },
    /// Start a created container's process. [`Response::Ok`].
    StartContainer { id: String },
    /// Set up the sandbox's network (see [`net`]): the guest NICs named,
    /// addressed and routed in the sandbox network namespace, which every
    /// container whose spec asks for a network namespace joins. Once per
    /// VM, before the first container. [`Response::Ok`].
    ConfigureNetwork { network: net::Network },
    /// Run another process in a running container (its namespaces, cgroup
    /// and seccomp filter). Started at once; [`Response::Created`].
    Exec {
        id: String,
        exec_id: String,
        #[serde(deserialize_with = "de_process")]
        process: Box<oci::Process>,
        #[serde(default)]
        stdio: StdioConfig,
    },
    /// Send `signal` to the process, or with `all` to every process of the
    /// container. [`Response::Ok`].
    Signal {
        id: String,
        #[serde(default)]
        exec_id: Option<String>,
        signal: i32,
        #[serde(default)]
        all: bool,
    },
    /// Wait until the process has exited and its output was delivered.
    /// [`Response::Exited`].
    Wait {
        id: String,
        #[serde(default)]
        exec_id: Option<String>,
    },
    /// Set the terminal size of a process with a pty. [`Response::Ok`].
    ResizePty {
        id: String,
        #[serde(default)]
        exec_id: Option<String>,
        rows: u16,
        cols: u16,
    },
    /// Close the process's stdin (EOF). [`Response::Ok`].
    CloseStdin {
        id: String,
        #[serde(default)]
        exec_id: Option<String>,
    },
    /// [`Response::State`].
    State { id: String },
    /// cgroup v2 counters; [`Response::Stats`].
    Stats { id: String },
    /// Freeze every process of the container (cgroup.freeze). [`Response::Ok`].
    Pause { id: String },
    /// Thaw a paused container. [`Response::Ok`].
    Resume { id: String },
    /// Apply new `linux.resources` to the container's cgroup. [`Response::Ok`].
    UpdateResources {
        id: String,
        #[serde(deserialize_with = "de_resources")]
        resources: Box<oci::LinuxResources>,
    },
    /// Remove a stopped container (with `force`, kill it first): processes,
    /// cgroup, the root file system the agent mounted. [`Response::Ok`].
    Remove {
        id: String,
        #[serde(default)]
        force: bool,
    },
    /// Turn this connection into an event stream: [`Response::Ok`], then one
    /// [`Response::Event`] frame (with this request's id) per event.
    Events,
    /// Turn this connection into a raw byte stream of one standard stream
    /// of a process (see [`container`]): [`Response::Ok`], then bytes.
    AttachStdio {
        id: String,
        #[serde(default)]
        exec_id: Option<String>,
        stream: StdioStream,
    },
}

/// Decodes an OCI object through a `serde_json::Value` with path tracking,
/// so that an error names the bad field (`spec.linux.namespaces[0].type:
/// ...`; serde's buffering for internally tagged enums would lose the path).
fn de_tracked<'de, D, T>(d: D, field: &str) -> Result<Box<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    decode_tracked(v, field)
        .map(Box::new)
        .map_err(serde::de::Error::custom)
}

fn de_spec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<oci::Spec>, D::Error> {
    de_tracked(d, "spec")
}

fn de_process<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<oci::Process>, D::Error> {
    de_tracked(d, "process")
}

fn de_resources<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Box<oci::LinuxResources>, D::Error> {
    de_tracked(d, "resources")
}

/// Decodes `v` as `T`; an error starts with `field` and the path of the
/// bad field inside it (`spec.linux.resources.pids.limit: ...`; with an
/// empty `field` just the path).
pub fn decode_tracked<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    field: &str,
) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let mut msg = match (field, path.as_str()) {
            ("", ".") => format!("spec: {}", e.inner()),
            ("", _) => format!("{path}: {}", e.inner()),
            (_, ".") => format!("{field}: {}", e.inner()),
            _ => format!("{field}.{path}: {}", e.inner()),
        };
        truncate_utf8(&mut msg, MAX_ERROR_MESSAGE);
        msg
    })
}

impl Request {
    /// The wire name (`"type"` tag) of this request, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Shutdown => "shutdown",
            Request::CreateContainer { .. } => "create_container",
            Request::StartContainer { .. } => "start_container",
            Request::ConfigureNetwork { .. } => "configure_network",
            Request::Exec { .. } => "exec",
            Request::Signal { .. } => "signal",
            Request::Wait { .. } => "wait",
            Request::ResizePty { .. } => "resize_pty",
            Request::CloseStdin { .. } => "close_stdin",
            Request::State { .. } => "state",
            Request::Stats { .. } => "stats",
            Request::Pause { .. } => "pause",
            Request::Resume { .. } => "resume",
            Request::UpdateResources { .. } => "update_resources",
            Request::Remove { .. } => "remove",
            Request::Events => "events",
            Request::AttachStdio { .. } => "attach_stdio",
        }
    }
}

/// Responses from the agent (internally tagged by `"type"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    Pong(PingInfo),
    Ok,
    Error(ErrorInfo),
    /// A container or exec was created; `warnings` lists spec fields the
    /// agent ignored (one line each).
    Created {
        pid: i32,
        warnings: Vec<String>,
    },
    /// Answer to [`Request::Wait`].
    Exited(ExitInfo),
    State(ContainerState),
    Stats(ContainerStats),
    /// One event on an events connection.
    Event {
        event: Event,
    },
}

/// Answer to [`Request::Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingInfo {
    /// `CARGO_PKG_VERSION` of the agent.
    pub agent_version: String,
    /// The agent's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// Time since the guest kernel booted (CLOCK_BOOTTIME), in milliseconds.
    pub uptime_ms: u64,
    /// Online CPUs in the guest.
    pub vcpus: u32,
    /// `MemTotal` of the guest, in KiB.
    pub mem_total_kib: u64,
}

/// Answer to a request that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorInfo {
    /// An error whose message is cut to [`MAX_ERROR_MESSAGE`] bytes (on a
    /// character boundary), since messages may quote peer input.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, MAX_ERROR_MESSAGE);
        ErrorInfo { code, message }
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The message is the peer's: shown, never obeyed by a terminal.
        write!(
            f,
            "{}: {}",
            self.code.as_str(),
            printable(&self.message, MAX_ERROR_MESSAGE)
        )
    }
}

/// Machine-readable class of an [`ErrorInfo`] (serialized in `snake_case`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame or its JSON could not be understood.
    BadRequest,
    /// The frame's `version` is not one the agent speaks.
    UnsupportedVersion,
    /// The request `type` is not known to this agent.
    UnknownRequest,
    /// The agent is at its connection limit.
    Busy,
    /// The agent failed while carrying out a valid request.
    Internal,
    /// The named container or exec does not exist.
    NotFound,
    /// A container or exec with that id exists already.
    AlreadyExists,
    /// The request does not fit the container's state (start twice, exec
    /// into a stopped container, remove a running one without force, ...).
    InvalidState,
    /// A code this side does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

/// Paths in /proc/PID/mountinfo: the kernel writes space, tab, newline and
/// backslash as three octal digits after a backslash. Host runtime and
/// agent both read mount tables.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        let byte = oct
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match byte {
            Some(v) if b[i] == b'\\' => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo("/x\\"), "/x\\");
        assert_eq!(unescape_mountinfo("/x\\04"), "/x\\04");
        assert_eq!(unescape_mountinfo("/x\\777"), "/x\\777");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    fn sample_ping() -> PingInfo {
        PingInfo {
            agent_version: "0.1.0".into(),
            protocol_version: PROTOCOL_VERSION,
            uptime_ms: 1234,
            vcpus: 2,
            mem_total_kib: 123_456,
        }
    }

    fn all_requests() -> Vec<Request> {
        let spec: oci::Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},
                "linux":{"namespaces":[{"type":"pid"}],"resources":{"memory":{"limit":1048576}}}}"#,
        )
        .unwrap();
        let id = || "c1".to_string();
        vec![
            Request::Ping,
            Request::Shutdown,
            Request::CreateContainer {
                id: id(),
                spec: Box::new(spec.clone()),
                rootfs: RootfsSource::Block {
                    device: "/dev/vda".into(),
                    fstype: "ext4".into(),
                    readonly: true,
                    options: String::new(),
                },
                stdio: StdioConfig {
                    stdin: true,
                    stdout: true,
                    stderr: false,
                },
            },
            Request::StartContainer { id: id() },
            Request::Exec {
                id: id(),
                exec_id: "e1".into(),
                process: Box::new(spec.process().clone().unwrap()),
                stdio: StdioConfig::default(),
            },
            Request::Signal {
                id: id(),
                exec_id: None,
                signal: 9,
                all: true,
            },
            Request::Wait {
                id: id(),
                exec_id: Some("e1".into()),
            },
            Request::ResizePty {
                id: id(),
                exec_id: None,
                rows: 24,
                cols: 80,
            },
            Request::CloseStdin {
                id: id(),
                exec_id: None,
            },
            Request::State { id: id() },
            Request::Stats { id: id() },
            Request::Pause { id: id() },
            Request::Resume { id: id() },
            Request::UpdateResources {
                id: id(),
                resources: Box::new(spec.linux().clone().unwrap().resources().clone().unwrap()),
            },
            Request::Remove {
                id: id(),
                force: true,
            },
            Request::Events,
            Request::AttachStdio {
                id: id(),
                exec_id: None,
                stream: StdioStream::Pty,
            },
        ]
    }

    fn all_responses() -> Vec<Response> {
        let mut v = vec![
            Response::Pong(sample_ping()),
            Response::Ok,
            Response::Created {
                pid: 7,
                warnings: vec!["process.apparmorProfile ignored".into()],
            },
            Response::Exited(ExitInfo::killed(9)),
            Response::State(ContainerState {
                id: "c1".into(),
                status: ContainerStatus::Stopped,
                pid: 7,
                exit: Some(ExitInfo::exited(7)),
                cgroup: "husk/c1".into(),
                execs: vec![container::ExecState {
                    exec_id: "e".into(),
                    pid: 8,
                    exit: None,
                }],
            }),
            Response::Stats(ContainerStats::default()),
            Response::Event {
                event: Event::Oom {
                    id: "c1".into(),
                    oom_kills: 1,
                },
            },
            Response::Event {
                event: Event::Exit {
                    id: "c1".into(),
                    exec_id: None,
                    exit: ExitInfo::killed(9),
                },
            },
        ];
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::UnsupportedVersion,
            ErrorCode::UnknownRequest,
            ErrorCode::Busy,
            ErrorCode::Internal,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::InvalidState,
            ErrorCode::Unknown,
        ] {
            v.push(Response::Error(ErrorInfo::new(code, "boom \u{e9}")));
        }
        v
    }

    #[test]
    fn roundtrip_every_request() {
        for (i, r) in all_requests().into_iter().enumerate() {
            let f = RequestFrame::new(u64::MAX - 100 + i as u64, r);
            let bytes = encode_frame(&f).unwrap();
            let back: RequestFrame = read_frame(&mut &bytes[..]).unwrap();
            assert_eq!(back, f);
        }
    }

    #[test]
    fn roundtrip_every_response() {
        for (i, r) in all_responses().into_iter().enumerate() {
            let f = ResponseFrame::new(i as u64, r);
            let bytes = encode_frame(&f).unwrap();
            let back: ResponseFrame = read_frame(&mut &bytes[..]).unwrap();
            assert_eq!(back, f);
        }
    }

    #[test]
    fn wire_shape_is_documented_one() {
        let j = serde_json::to_string(&RequestFrame::new(7, Request::Ping)).unwrap();
        assert_eq!(j, r#"{"version":1,"id":7,"request":{"type":"ping"}}"#);
        let j = serde_json::to_string(&ResponseFrame::new(3, Response::Ok)).unwrap();
        assert_eq!(j, r#"{"version":1,"id":3,"response":{"type":"ok"}}"#);
        let j = serde_json::to_string(&Response::Error(ErrorInfo::new(
            ErrorCode::UnsupportedVersion,
            "x",
        )))
        .unwrap();
        assert_eq!(
            j,
            r#"{"type":"error","code":"unsupported_version","message":"x"}"#
        );
        let j = serde_json::to_value(Response::Pong(sample_ping())).unwrap();
        assert_eq!(j["type"], "pong");
        assert_eq!(j["vcpus"], 2);
        assert_eq!(j["mem_total_kib"], 123_456);
    }

    #[test]
    fn container_wire_shapes() {
        let v = serde_json::to_value(Request::Wait {
            id: "c".into(),
            exec_id: None,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"wait","id":"c","exec_id":null})
        );
        let r: Request = serde_json::from_str(r#"{"type":"wait","id":"c"}"#).unwrap();
        assert_eq!(r.name(), "wait");
        let v = serde_json::to_value(RootfsSource::VirtioFs {
            tag: "t".into(),
            subdir: None,
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"kind":"virtio_fs","tag":"t"}));
        let r: RootfsSource =
            serde_json::from_str(r#"{"kind":"virtio_fs","tag":"husk","subdir":"rootfs"}"#).unwrap();
        assert_eq!(
            r,
            RootfsSource::VirtioFs {
                tag: "husk".into(),
                subdir: Some("rootfs".into())
            }
        );
        let r: RootfsSource =
            serde_json::from_str(r#"{"kind":"block","device":"/dev/vda"}"#).unwrap();
        assert_eq!(
            r,
            RootfsSource::Block {
                device: "/dev/vda".into(),
                fstype: "ext4".into(),
                readonly: false,
                options: String::new()
            }
        );
        let v = serde_json::to_value(Response::Exited(ExitInfo::killed(9))).unwrap();
        assert_eq!(v["type"], "exited");
        assert_eq!(v["status"], 137);
        let v = serde_json::to_value(Response::Event {
            event: Event::Oom {
                id: "c".into(),
                oom_kills: 2,
            },
        })
        .unwrap();
        assert_eq!(v["event"]["kind"], "oom");
    }

    #[test]
    fn unknown_error_code_is_tolerated() {
        let r: Response =
            serde_json::from_str(r#"{"type":"error","code":"from_the_future","message":"m"}"#)
                .unwrap();
        assert_eq!(
            r,
            Response::Error(ErrorInfo {
                code: ErrorCode::Unknown,
                message: "m".into()
            })
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let f: RequestFrame = serde_json::from_str(
            r#"{"version":1,"id":2,"extra":[1],"request":{"type":"ping","x":1}}"#,
        )
        .unwrap();
        assert_eq!(f, RequestFrame::new(2, Request::Ping));
    }

    #[test]
    fn header_parses_without_understanding_request() {
        let h: FrameHeader = serde_json::from_str(
            r#"{"version":9,"id":5,"request":{"type":"teleport","to":"mars"}}"#,
        )
        .unwrap();
        assert_eq!(h, FrameHeader { version: 9, id: 5 });
    }

    #[test]
    fn request_names_match_wire_tags() {
        for r in all_requests() {
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v["type"], r.name());
        }
    }

    #[test]
    fn error_code_names_match_wire() {
        for r in all_responses() {
            if let Response::Error(e) = r {
                let v = serde_json::to_value(e.code).unwrap();
                assert_eq!(v, e.code.as_str());
            }
        }
    }

    #[test]
    fn error_message_is_truncated_on_char_boundary() {
        let long = "\u{e9}".repeat(MAX_ERROR_MESSAGE); // 2 bytes each
        let e = ErrorInfo::new(ErrorCode::Internal, long);
        assert!(e.message.len() <= MAX_ERROR_MESSAGE);
        assert_eq!(e.message.len(), MAX_ERROR_MESSAGE);
        let e = ErrorInfo::new(ErrorCode::Internal, format!("a{}", "\u{e9}".repeat(400)));
        assert_eq!(e.message.len(), MAX_ERROR_MESSAGE - 1);
        assert!(e.message.starts_with('a'));
    }
}
