//! Byte-level fixtures written by hand from the layouts in Nix's sources
//! (worker-protocol-connection.cc, worker-protocol.cc, daemon.cc, serialise.cc).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use harmonia_protocol::handshake::{ClientHandshake, ServerHandshake, TrustLevel};
use harmonia_protocol::request::{
    AddToStoreNarRequest, AddToStoreRequest, PathRequest, QueryPathInfoResponse,
    QueryValidPathsRequest, Request,
};
use harmonia_protocol::stderr::{Field, NixError, StderrMsg};
use harmonia_protocol::types::{UnkeyedValidPathInfo, ValidPathInfo};
use harmonia_protocol::{
    NixReader, NixWriter, PROTOCOL_VERSION, ProtocolError, client_handshake, read_request,
    server_handshake,
};
use harmonia_utils_hash::NarHash;

const MAGIC1: u64 = 0x6e697863;
const MAGIC2: u64 = 0x6478696f;
const LAST: u64 = 0x616c7473;
const ERROR: u64 = 0x63787470;
const READ: u64 = 0x64617461;

fn server_info(features: &[&str]) -> ServerHandshake {
    ServerHandshake {
        version: PROTOCOL_VERSION,
        nix_version: "2.24.0 (harmonia)".into(),
        trust: TrustLevel::NotTrusted,
        features: features.iter().map(|s| s.to_string()).collect(),
    }
}

/// Runs the server side on `input` and returns what it wrote.
async fn serve(
    input: &[u8],
    info: &ServerHandshake,
) -> (
    harmonia_protocol::Result<harmonia_protocol::Negotiated>,
    Vec<u8>,
    usize,
) {
    let mut r = reader(input, 38);
    let mut w = writer(38);
    let res = server_handshake(&mut r, &mut w, info).await;
    let rest = r.into_inner().len();
    (res, w.into_inner(), rest)
}

#[tokio::test]
async fn server_handshake_1_21() {
    // Nix 2.3: magic, version, CPU affinity (0), reserveSpace.
    let input = cat(&[u(MAGIC1), u(0x115), u(0), u(0)]);
    let (res, out, rest) = serve(&input, &server_info(&[])).await;
    let n = res.unwrap();
    assert_eq!(n.version, v(21));
    assert_eq!(rest, 0);
    // No version string (< 1.33), no trust (< 1.35).
    assert_eq!(out, cat(&[u(MAGIC2), u(0x126), u(LAST)]));
}

#[tokio::test]
async fn server_handshake_1_21_with_cpu_affinity() {
    let input = cat(&[u(MAGIC1), u(0x115), u(1), u(3), u(0)]);
    let (res, out, rest) = serve(&input, &server_info(&[])).await;
    assert_eq!(res.unwrap().version, v(21));
    assert_eq!(rest, 0);
    assert_eq!(out, cat(&[u(MAGIC2), u(0x126), u(LAST)]));
}

#[tokio::test]
async fn server_handshake_1_34() {
    let input = cat(&[u(MAGIC1), u(0x122), u(0), u(0)]);
    let (res, out, _) = serve(&input, &server_info(&[])).await;
    assert_eq!(res.unwrap().version, v(34));
    assert_eq!(
        out,
        cat(&[u(MAGIC2), u(0x126), s("2.24.0 (harmonia)"), u(LAST)])
    );
}

#[tokio::test]
async fn server_handshake_1_35_and_1_37() {
    for (minor, trust, wire) in [
        (35u64, TrustLevel::NotTrusted, 2u64),
        (37, TrustLevel::Trusted, 1),
        (37, TrustLevel::Unknown, 0),
    ] {
        let input = cat(&[u(MAGIC1), u(0x100 | minor), u(0), u(0)]);
        let mut info = server_info(&[]);
        info.trust = trust;
        let (res, out, rest) = serve(&input, &info).await;
        assert_eq!(res.unwrap().version, v(minor as u8));
        assert_eq!(rest, 0);
        assert_eq!(
            out,
            cat(&[
                u(MAGIC2),
                u(0x126),
                s("2.24.0 (harmonia)"),
                u(wire),
                u(LAST)
            ])
        );
    }
}

#[tokio::test]
async fn server_handshake_1_38_features() {
    // Client features come first, then the daemon's; then the usual tail.
    let input = cat(&[u(MAGIC1), u(0x126), u(2), s("bar"), s("foo"), u(0), u(0)]);
    let (res, out, rest) = serve(&input, &server_info(&["foo", "zzz"])).await;
    let n = res.unwrap();
    assert_eq!(n.version, v(38));
    assert_eq!(n.features, BTreeSet::from(["foo".to_string()]));
    assert_eq!(rest, 0);
    assert_eq!(
        out,
        cat(&[
            u(MAGIC2),
            u(0x126),
            u(2),
            s("foo"),
            s("zzz"),
            s("2.24.0 (harmonia)"),
            u(2),
            u(LAST)
        ])
    );
}

#[tokio::test]
async fn server_handshake_newer_client_is_capped() {
    let input = cat(&[u(MAGIC1), u(0x127), u(0), u(0), u(0)]);
    let (res, _, _) = serve(&input, &server_info(&[])).await;
    assert_eq!(res.unwrap().version, v(38));
}

#[tokio::test]
async fn server_handshake_rejects_old_and_bad() {
    let input = cat(&[u(MAGIC1), u(0x114), u(0), u(0)]);
    let (res, out, _) = serve(&input, &server_info(&[])).await;
    assert!(matches!(res, Err(ProtocolError::UnsupportedVersion(v)) if v.minor() == 20));
    assert_eq!(out, cat(&[u(MAGIC2), u(0x126)]));

    // Major 0 is older than anything; a newer major gets our version, as from Nix.
    let input = cat(&[u(MAGIC1), u(0x0026)]);
    let (res, _, _) = serve(&input, &server_info(&[])).await;
    assert!(matches!(res, Err(ProtocolError::UnsupportedVersion(_))));
    let input = cat(&[u(MAGIC1), u(0x226), u(0), u(0), u(0)]);
    let (res, _, rest) = serve(&input, &server_info(&[])).await;
    assert_eq!(res.unwrap().version, v(38));
    assert_eq!(rest, 0);

    let (res, out, _) = serve(&u(0x1234), &server_info(&[])).await;
    assert!(matches!(
        res,
        Err(ProtocolError::BadMagic { got: 0x1234, .. })
    ));
    assert!(out.is_empty());

    let (res, _, _) = serve(&u(MAGIC1)[..5], &server_info(&[])).await;
    assert!(res.unwrap_err().is_eof());
}

/// Client side against canned daemon bytes; returns what the client sent.
async fn client_against(
    daemon: &[u8],
    offer: &ClientHandshake,
) -> (
    harmonia_protocol::Result<harmonia_protocol::Negotiated>,
    Vec<u8>,
) {
    let mut r = reader(daemon, 38);
    let mut w = writer(38);
    let res = client_handshake(&mut r, &mut w, offer).await;
    (res, w.into_inner())
}

#[tokio::test]
async fn client_handshake_fixtures() {
    // Nix 2.3 daemon (1.21).
    let (res, out) = client_against(
        &cat(&[u(MAGIC2), u(0x115), u(LAST)]),
        &ClientHandshake::default(),
    )
    .await;
    let n = res.unwrap();
    assert_eq!(
        (n.version, n.daemon_nix_version, n.trust),
        (v(21), None, TrustLevel::Unknown)
    );
    assert_eq!(out, cat(&[u(MAGIC1), u(0x126), u(0), u(0)]));

    // Nix 2.8 daemon (1.34): version string, no trust; a log line during startup.
    let daemon = cat(&[
        u(MAGIC2),
        u(0x122),
        s("2.8.0"),
        u(0x6f6c6d67),
        s("hello\n"),
        u(LAST),
    ]);
    let (res, out) = client_against(&daemon, &ClientHandshake::default()).await;
    let n = res.unwrap();
    assert_eq!(n.version, v(34));
    assert_eq!(n.daemon_nix_version.as_deref(), Some("2.8.0"));
    assert_eq!(n.startup_messages, vec![StderrMsg::Next("hello\n".into())]);
    assert_eq!(out, cat(&[u(MAGIC1), u(0x126), u(0), u(0)]));

    // 1.35 and 1.37: trust flag.
    for (minor, wire, trust) in [
        (35u64, 1u64, TrustLevel::Trusted),
        (37, 2, TrustLevel::NotTrusted),
    ] {
        let daemon = cat(&[u(MAGIC2), u(0x100 | minor), s("2.20.0"), u(wire), u(LAST)]);
        let (res, out) = client_against(&daemon, &ClientHandshake::default()).await;
        let n = res.unwrap();
        assert_eq!((n.version.minor() as u64, n.trust), (minor, trust));
        assert_eq!(out, cat(&[u(MAGIC1), u(0x126), u(0), u(0)]));
    }

    // 1.38: the client sends its features after reading the daemon's version.
    let daemon = cat(&[
        u(MAGIC2),
        u(0x126),
        u(1),
        s("b"),
        s("2.25.0"),
        u(0),
        u(LAST),
    ]);
    let offer = ClientHandshake {
        version: PROTOCOL_VERSION,
        features: ["a".to_string(), "b".to_string()].into(),
    };
    let (res, out) = client_against(&daemon, &offer).await;
    let n = res.unwrap();
    assert_eq!(n.features, BTreeSet::from(["b".to_string()]));
    assert_eq!(
        out,
        cat(&[u(MAGIC1), u(0x126), u(2), s("a"), s("b"), u(0), u(0)])
    );

    // A daemon error during startup.
    let daemon = cat(&[
        u(MAGIC2),
        u(0x122),
        s("2.8.0"),
        u(ERROR),
        s("Error"),
        u(0),
        s("Error"),
        s("no"),
        u(0),
        u(0),
    ]);
    // At 1.34 errors are structured (>= 1.26).
    let (res, _) = client_against(&daemon, &ClientHandshake::default()).await;
    assert!(matches!(res, Err(ProtocolError::Remote(e)) if e.msg == "no"));
}

fn sample_info() -> UnkeyedValidPathInfo {
    UnkeyedValidPathInfo {
        deriver: Some(path(P3)),
        nar_hash: NarHash::digest_of(b"nar"),
        references: [path(P2), path(P1)].into(),
        registration_time: 1_700_000_000,
        nar_size: 123_456,
        ultimate: true,
        signatures: ["cache.example.org-1:c2lnbmF0dXJl".to_string()].into(),
        ca: None,
    }
}

fn sample_info_bytes() -> Vec<u8> {
    cat(&[
        s(format!("/nix/store/{P3}")),
        s(NarHash::digest_of(b"nar").hash().to_base16()),
        u(2),
        // References are a set: sorted by base name.
        s(format!("/nix/store/{P1}")),
        s(format!("/nix/store/{P2}")),
        u(1_700_000_000),
        u(123_456),
        u(1),
        u(1),
        s("cache.example.org-1:c2lnbmF0dXJl"),
        s(""),
    ])
}

#[tokio::test]
async fn query_path_info_fixtures() {
    for minor in [21u8, 34, 35, 37, 38] {
        // Request: op 26, full path.
        let req = cat(&[u(26), s(format!("/nix/store/{P1}"))]);
        let got = read_request(&mut reader(&req, minor))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Request::QueryPathInfo(PathRequest { path: path(P1) }));

        // Reply: LAST, valid flag, unkeyed info.
        let mut w = writer(minor);
        w.write_reply(&QueryPathInfoResponse(Some(sample_info())));
        assert_eq!(w.buffer(), cat(&[u(LAST), u(1), sample_info_bytes()]));
        let mut w = writer(minor);
        w.write_reply(&QueryPathInfoResponse(None));
        assert_eq!(w.buffer(), cat(&[u(LAST), u(0)]));

        // And back.
        let bytes = cat(&[u(1), sample_info_bytes()]);
        let back: QueryPathInfoResponse = reader(&bytes, minor).read().await.unwrap();
        assert_eq!(back.0, Some(sample_info()));
    }
}

#[tokio::test]
async fn nar_hash_is_read_in_any_encoding() {
    let h = NarHash::digest_of(b"nar");
    for text in [
        h.hash().to_base16(),
        h.to_typed_nix_base32(),
        h.to_sri(),
        format!("sha256:{}", h.hash().to_base16()),
    ] {
        let bytes = s(&text);
        let back: NarHash = reader(&bytes, 38).read().await.unwrap();
        assert_eq!(back, h, "{text}");
    }
}

#[tokio::test]
async fn query_valid_paths_fixtures() {
    // Before 1.27 no substitute flag.
    let req = cat(&[u(31), u(1), s(format!("/nix/store/{P1}"))]);
    let got = read_request(&mut reader(&req, 26)).await.unwrap().unwrap();
    assert_eq!(
        got,
        Request::QueryValidPaths(QueryValidPathsRequest {
            paths: [path(P1)].into(),
            substitute: false
        })
    );
    for minor in [27u8, 34, 38] {
        let req = cat(&[u(31), u(1), s(format!("/nix/store/{P1}")), u(1)]);
        let mut r = reader(&req, minor);
        let got = read_request(&mut r).await.unwrap().unwrap();
        assert_eq!(
            got,
            Request::QueryValidPaths(QueryValidPathsRequest {
                paths: [path(P1)].into(),
                substitute: true
            })
        );
        assert!(r.into_inner().is_empty());
    }
    let mut w = writer(34);
    w.write_reply(&BTreeSet::from([path(P2), path(P1)]));
    assert_eq!(
        w.buffer(),
        cat(&[
            u(LAST),
            u(2),
            s(format!("/nix/store/{P1}")),
            s(format!("/nix/store/{P2}"))
        ])
    );
}

fn add_to_store_nar_request_bytes() -> Vec<u8> {
    cat(&[
        u(39),
        s(format!("/nix/store/{P1}")),
        sample_info_bytes(),
        u(0),
        u(1),
    ])
}

#[tokio::test]
async fn add_to_store_nar_fixtures() {
    let expected = AddToStoreNarRequest {
        info: ValidPathInfo {
            path: path(P1),
            info: sample_info(),
        },
        repair: false,
        dont_check_sigs: true,
    };
    // Same request layout at every supported version.
    for minor in [21u8, 23, 34, 38] {
        let bytes = add_to_store_nar_request_bytes();
        let got = read_request(&mut reader(&bytes, minor))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, Request::AddToStoreNar(expected.clone()));
        let mut w = writer(minor);
        w.write(&got);
        assert_eq!(w.buffer(), bytes);
    }

    // From 1.23 the NAR follows framed: read it with FramedReader, the stream after it
    // is the next request.
    use tokio::io::AsyncReadExt;
    let nar = harmonia_protocol_nar_sample();
    let mut wire = cat(&[
        u(5),
        nar[..5].to_vec(),
        u((nar.len() - 5) as u64),
        nar[5..].to_vec(),
        u(0),
        u(23),
    ]);
    let mut fr = harmonia_protocol::framed::FramedReader::new(&wire[..]);
    let mut got = Vec::new();
    fr.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, nar);
    assert_eq!(fr.into_inner(), &u(23)[..]);
    wire.clear();

    // At 1.21/1.22 the daemon pulls the NAR with STDERR_READ; the client answers each
    // with a byte string.
    let client_sends = cat(&[s(&nar[..16]), s(&nar[16..])]);
    let mut r = reader(&client_sends, 21);
    let mut w = writer(21);
    let mut sink = Vec::new();
    let n = harmonia_protocol::nar::read_tunneled_nar(&mut r, &mut w, &mut sink)
        .await
        .unwrap();
    assert_eq!(n as usize, nar.len());
    assert_eq!(sink, nar);
    assert_eq!(w.into_inner(), cat(&[u(READ), u(65536), u(READ), u(65536)]));
}

/// A tiny NAR of one regular file "hi".
fn harmonia_protocol_nar_sample() -> Vec<u8> {
    cat(&[
        s("nix-archive-1"),
        s("("),
        s("type"),
        s("regular"),
        s("contents"),
        s("hi"),
        s(")"),
    ])
}

#[tokio::test]
async fn add_to_store_fixtures() {
    // 1.25+: name, method with algo, references, repair (then framed data).
    let bytes = cat(&[
        u(7),
        s("foo"),
        s("fixed:r:sha256"),
        u(1),
        s(format!("/nix/store/{P1}")),
        u(0),
    ]);
    let got = read_request(&mut reader(&bytes, 25))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Request::AddToStore(AddToStoreRequest::Ca {
            name: "foo".into(),
            method_algo: "fixed:r:sha256".into(),
            references: [path(P1)].into(),
            repair: false
        })
    );
    // Before: name, fixed, recursive, algo (then an unframed NAR).
    let bytes = cat(&[u(7), s("foo"), u(1), u(1), s("sha256")]);
    let got = read_request(&mut reader(&bytes, 24))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Request::AddToStore(AddToStoreRequest::Legacy {
            name: "foo".into(),
            fixed: true,
            recursive: 1,
            hash_algo: "sha256".into()
        })
    );
}

#[tokio::test]
async fn structured_error_fixtures() {
    let mut err = NixError::new("path '/nix/store/x' is not valid");
    err.traces = vec!["while doing this".into()];
    // Before 1.26: message and exit status.
    for minor in [21u8, 25] {
        let mut w = writer(minor);
        w.write_error(&err);
        assert_eq!(w.buffer(), cat(&[u(ERROR), s(&err.msg), u(1)]));
    }
    // From 1.26: "Error", level, "Error", message, no position, traces (no position, text).
    for minor in [26u8, 34, 38] {
        let mut w = writer(minor);
        w.write_error(&err);
        let expected = cat(&[
            u(ERROR),
            s("Error"),
            u(0),
            s("Error"),
            s(&err.msg),
            u(0),
            u(1),
            u(0),
            s("while doing this"),
        ]);
        assert_eq!(w.buffer(), expected);
        let back: StderrMsg = reader(&expected, minor).read().await.unwrap();
        assert_eq!(back, StderrMsg::Error(err.clone()));
    }
}

#[tokio::test]
async fn activity_fixtures() {
    let msg = StderrMsg::StartActivity {
        id: 7,
        level: 3,
        activity_type: 100,
        text: "copying".into(),
        fields: vec![Field::String("/nix/store/x".into()), Field::Int(5)],
        parent: 0,
    };
    let mut w = writer(34);
    w.write(&msg);
    let expected = cat(&[
        u(0x53545254),
        u(7),
        u(3),
        u(100),
        s("copying"),
        u(2),
        u(1),
        s("/nix/store/x"),
        u(0),
        u(5),
        u(0),
    ]);
    assert_eq!(w.buffer(), expected);
    let mut w = writer(34);
    w.write(&StderrMsg::Result {
        id: 7,
        result_type: 105,
        fields: vec![Field::Int(1)],
    });
    w.write(&StderrMsg::StopActivity(7));
    assert_eq!(
        w.buffer(),
        cat(&[
            u(0x52534c54),
            u(7),
            u(105),
            u(1),
            u(0),
            u(1),
            u(0x53544f50),
            u(7)
        ])
    );
}

#[tokio::test]
async fn set_options_and_output_map_fixtures() {
    let bytes = cat(&[
        u(19),
        u(0),
        u(0),
        u(0),
        u(3),
        u(1),
        u(0),
        u(1),
        u(0),
        u(0),
        u(0),
        u(0),
        u(1),
        u(1),
        s("max-jobs"),
        s("4"),
    ]);
    let got = read_request(&mut reader(&bytes, 34))
        .await
        .unwrap()
        .unwrap();
    let Request::SetOptions(o) = got else {
        panic!("not SetOptions")
    };
    assert_eq!(o.verbosity, 3);
    assert_eq!(o.max_build_jobs, 1);
    assert!(o.use_substitutes);
    assert_eq!(o.overrides, vec![("max-jobs".into(), "4".to_string())]);

    let map: BTreeMap<String, Option<harmonia_store_path::StorePath>> = [
        ("out".to_string(), Some(path(P1))),
        ("dev".to_string(), None),
    ]
    .into();
    let mut w = writer(34);
    w.write(&map);
    assert_eq!(
        w.buffer(),
        cat(&[
            u(2),
            s("dev"),
            s(""),
            s("out"),
            s(format!("/nix/store/{P1}"))
        ])
    );
}

#[test]
fn build_result_fixtures() {
    use harmonia_protocol::request::{BuildResult, OptionalMicros};
    let br = BuildResult {
        status: 3,
        error_msg: "builder failed".into(),
        times_built: 1,
        is_non_deterministic: false,
        start_time: 10,
        stop_time: 20,
        cpu_user: OptionalMicros(Some(5)),
        cpu_system: OptionalMicros(None),
        built_outputs: [("sha256:00!out".to_string(), "{}".to_string())].into(),
    };
    let at = |minor: u8| {
        let mut w = writer(minor);
        w.write(&br);
        w.buffer().to_vec()
    };
    assert_eq!(at(27), cat(&[u(3), s("builder failed")]));
    assert_eq!(
        at(28),
        cat(&[u(3), s("builder failed"), u(1), s("sha256:00!out"), s("{}")])
    );
    let v29 = cat(&[u(3), s("builder failed"), u(1), u(0), u(10), u(20)]);
    assert_eq!(
        at(34),
        cat(&[v29.clone(), u(1), s("sha256:00!out"), s("{}")])
    );
    assert_eq!(
        at(37),
        cat(&[v29, u(1), u(5), u(0), u(1), s("sha256:00!out"), s("{}")])
    );
}

#[test]
fn writer_types_are_send() {
    fn is_send<T: Send>() {}
    is_send::<NixReader<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>>();
    is_send::<NixWriter<tokio::net::unix::OwnedWriteHalf>>();
}
