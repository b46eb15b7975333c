//! Tests of the request server: replies to frame bodies, and the serve
//! loop of one connection.

use super::*;
use crate::runtime::Runtime;
use husk_protocol::{encode_frame, read_frame, MAX_FRAME};
use husk_protocol::{Request, RequestFrame, Response, PROTOCOL_VERSION};
use std::os::unix::net::UnixStream;

/// The reply of a fresh runtime to `body`.
fn reply_to(body: &[u8]) -> Reply {
    handle_body(body, &Runtime::default())
}

fn body(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn code(r: &Reply) -> ErrorCode {
    match &r.response {
        Response::Error(e) => e.code,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn ping_and_shutdown() {
    let r = reply_to(&body(r#"{"version":1,"id":42,"request":{"type":"ping"}}"#));
    assert_eq!(r.id, 42);
    assert_eq!(r.then, Then::Continue);
    match r.response {
        Response::Pong(p) => {
            assert_eq!(p.protocol_version, PROTOCOL_VERSION);
            assert!(p.vcpus >= 1);
        }
        other => panic!("{other:?}"),
    }
    let r = reply_to(&body(
        r#"{"version":1,"id":43,"request":{"type":"shutdown"}}"#,
    ));
    assert_eq!(
        (r.id, r.response, r.then),
        (43, Response::Ok, Then::Shutdown)
    );
}

#[test]
fn error_classes() {
    let r = reply_to(&body(r#"{"version":2,"id":5,"request":{"type":"ping"}}"#));
    assert_eq!(
        (r.id, code(&r), r.then),
        (5, ErrorCode::UnsupportedVersion, Then::Continue)
    );
    // A future version's request shape does not matter.
    let r = reply_to(&body(r#"{"version":0,"id":6,"request":17}"#));
    assert_eq!((r.id, code(&r)), (6, ErrorCode::UnsupportedVersion));

    let r = reply_to(&body(
        r#"{"version":1,"id":7,"request":{"type":"teleport"}}"#,
    ));
    assert_eq!(
        (r.id, code(&r), r.then),
        (7, ErrorCode::UnknownRequest, Then::Continue)
    );

    let r = reply_to(&body(r#"{"version":1,"id":8,"request":{}}"#));
    assert_eq!(
        (r.id, code(&r), r.then),
        (8, ErrorCode::BadRequest, Then::Continue)
    );

    for bad in [
        &b"{"[..],
        b"[]",
        b"\xff\xff",
        b"{\"id\":1}",
        b"{\"version\":1,\"id\":\"x\"}",
    ] {
        let r = reply_to(bad);
        assert_eq!(
            (r.id, code(&r), r.then),
            (0, ErrorCode::BadRequest, Then::Close),
            "{bad:?}"
        );
    }
}

#[test]
fn bad_fields_of_container_requests_are_named() {
    let r = reply_to(&body(
        r#"{"version":1,"id":3,"request":{"type":"create_container","id":"c",
        "rootfs":{"kind":"path","path":"/r"},
        "spec":{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"bogus"}]}}}}"#,
    ));
    match &r.response {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(
                e.message.starts_with("spec.linux.namespaces[0].type:"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.then, Then::Continue);
    let r = reply_to(&body(
        r#"{"version":1,"id":4,"request":{"type":"create_container","id":"c",
        "rootfs":{"kind":"floppy"},"spec":{"ociVersion":"1.0.2"}}}"#,
    ));
    assert_eq!(code(&r), ErrorCode::BadRequest);
    let r = reply_to(&body(
        r#"{"version":1,"id":5,"request":{"type":"exec","id":"c","exec_id":"e",
        "process":{"cwd":"/","user":{"uid":"x"}}}}"#,
    ));
    match &r.response {
        Response::Error(e) => {
            assert!(e.message.starts_with("process.user.uid:"), "{}", e.message)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_unknown_type_name_is_not_echoed_in_full() {
    let name = "x".repeat(500_000);
    let r = reply_to(format!(r#"{{"version":1,"id":1,"request":{{"type":"{name}"}}}}"#).as_bytes());
    match r.response {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::UnknownRequest);
            assert!(e.message.len() <= husk_protocol::MAX_ERROR_MESSAGE);
        }
        other => panic!("{other:?}"),
    }
}

/// Runs serve_conn on one end of a socketpair, returns the other end.
fn serve_pair() -> (UnixStream, std::thread::JoinHandle<Outcome>) {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let h = std::thread::spawn(move || serve_conn(&mut b, &Runtime::default()));
    (a, h)
}

#[test]
fn conn_serves_until_shutdown() {
    let (mut a, h) = serve_pair();
    for id in 1..4 {
        write_frame(&mut a, &RequestFrame::new(id, Request::Ping)).unwrap();
        let r: ResponseFrame = read_frame(&mut a).unwrap();
        assert_eq!(r.id, id);
        assert!(matches!(r.response, Response::Pong(_)));
    }
    write_frame(&mut a, &RequestFrame::new(9, Request::Shutdown)).unwrap();
    let r: ResponseFrame = read_frame(&mut a).unwrap();
    assert_eq!((r.id, r.response), (9, Response::Ok));
    assert_eq!(h.join().unwrap(), Outcome::Shutdown);
}

#[test]
fn conn_closes_after_oversized_frame() {
    let (mut a, h) = serve_pair();
    a.write_all(&u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes())
        .unwrap();
    let r: ResponseFrame = read_frame(&mut a).unwrap();
    assert_eq!(r.id, 0);
    assert!(matches!(
        r.response,
        Response::Error(ErrorInfo {
            code: ErrorCode::BadRequest,
            ..
        })
    ));
    assert!(matches!(
        read_frame::<_, ResponseFrame>(&mut a),
        Err(FrameError::Closed)
    ));
    assert_eq!(h.join().unwrap(), Outcome::Closed);
}

#[test]
fn conn_keeps_going_after_wrong_version() {
    let (mut a, h) = serve_pair();
    let mut f = RequestFrame::new(3, Request::Ping);
    f.version = 99;
    write_frame(&mut a, &f).unwrap();
    let r: ResponseFrame = read_frame(&mut a).unwrap();
    assert_eq!(r.version, PROTOCOL_VERSION);
    assert_eq!(r.id, 3);
    assert!(matches!(
        r.response,
        Response::Error(ErrorInfo {
            code: ErrorCode::UnsupportedVersion,
            ..
        })
    ));
    a.write_all(&encode_frame(&RequestFrame::new(4, Request::Ping)).unwrap())
        .unwrap();
    let r: ResponseFrame = read_frame(&mut a).unwrap();
    assert_eq!(r.id, 4);
    drop(a);
    assert_eq!(h.join().unwrap(), Outcome::Closed);
}

#[test]
fn conn_survives_truncated_frame() {
    let (mut a, h) = serve_pair();
    a.write_all(&[0, 0, 1, 0, b'{']).unwrap();
    drop(a);
    assert_eq!(h.join().unwrap(), Outcome::Closed);
}

#[test]
fn a_bad_network_is_a_bad_request_naming_the_field() {
    let r = reply_to(&body(
        r#"{"version":1,"id":9,"request":{"type":"configure_network","network":{
            "interfaces":[{"name":"eth0","mac":"02:42:ac:11:00:02","mtu":1500}],
            "routes":[{"gateway":"172.17.0.1","device":"eth9"}]}}}"#,
    ));
    assert_eq!(r.id, 9);
    match r.response {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert_eq!(
                e.message,
                "network.routes[0].device: 'eth9' is not one of the interfaces"
            );
        }
        other => panic!("{other:?}"),
    }
}
