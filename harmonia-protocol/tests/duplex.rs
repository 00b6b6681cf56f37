//! Our client against a small server built from this crate, over an in-memory duplex
//! pipe, at several versions: every data flow (framed, tunnelled, raw NAR, multiple)
//! and errors that leave the connection usable.

mod common;

use std::collections::BTreeSet;

use common::{P1, P2, cat, path, s, store_dir};
use harmonia_protocol::client::Client;
use harmonia_protocol::framed::FramedReader;
use harmonia_protocol::handshake::{
    ClientHandshake, ServerHandshake, TrustLevel, server_handshake,
};
use harmonia_protocol::multiple::MultipleReader;
use harmonia_protocol::nar::read_tunneled_nar;
use harmonia_protocol::request::*;
use harmonia_protocol::stderr::{NixError, StderrMsg};
use harmonia_protocol::types::{UnkeyedValidPathInfo, ValidPathInfo};
use harmonia_protocol::{
    NixReader, NixWriter, PROTOCOL_VERSION, ProtocolError, ProtocolVersion, read_request,
};
use harmonia_store_path::StorePath;
use harmonia_utils_hash::NarHash;
use tokio::io::{AsyncReadExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

type Srv = (
    NixReader<BufReader<ReadHalf<DuplexStream>>>,
    NixWriter<WriteHalf<DuplexStream>>,
);

fn nar(contents: &[u8]) -> Vec<u8> {
    cat(&[
        s("nix-archive-1"),
        s("("),
        s("type"),
        s("regular"),
        s("contents"),
        s(contents),
        s(")"),
    ])
}

fn info(nar: &[u8]) -> UnkeyedValidPathInfo {
    UnkeyedValidPathInfo {
        deriver: None,
        nar_hash: NarHash::digest_of(nar),
        references: BTreeSet::new(),
        registration_time: 1,
        nar_size: nar.len() as u64,
        ultimate: false,
        signatures: BTreeSet::new(),
        ca: None,
    }
}

/// A toy store holding what clients added; answers like a daemon.
async fn serve(stream: DuplexStream) -> Result<Vec<(StorePath, Vec<u8>)>, ProtocolError> {
    let (r, w) = tokio::io::split(stream);
    let (mut r, mut w): Srv = (
        NixReader::new(BufReader::new(r), PROTOCOL_VERSION, store_dir()),
        NixWriter::new(w, PROTOCOL_VERSION, store_dir()),
    );
    server_handshake(
        &mut r,
        &mut w,
        &ServerHandshake {
            version: PROTOCOL_VERSION,
            nix_version: "test".into(),
            trust: TrustLevel::Trusted,
            features: BTreeSet::new(),
        },
    )
    .await?;
    let mut store: Vec<(StorePath, Vec<u8>)> = Vec::new();
    while let Some(req) = read_request(&mut r).await? {
        match req {
            Request::SetOptions(_) => w.write_reply(&NoReply),
            Request::IsValidPath(PathRequest { path }) => {
                w.write_log("checking");
                w.write_reply(&store.iter().any(|(p, _)| *p == path));
            }
            Request::QueryPathInfo(PathRequest { path }) => {
                let found = store.iter().find(|(p, _)| *p == path).map(|(_, n)| info(n));
                w.write_reply(&QueryPathInfoResponse(found));
            }
            Request::NarFromPath(PathRequest { path }) => {
                match store.iter().find(|(p, _)| *p == path) {
                    Some((_, n)) => {
                        w.write_u64(harmonia_protocol::stderr::STDERR_LAST);
                        w.write_raw(n);
                    }
                    None => w.write_error(&NixError::new(format!("path '{path}' is not valid"))),
                }
            }
            Request::AddToStoreNar(req) => {
                let mut data = Vec::new();
                if r.version() >= ProtocolVersion::new(1, 23) {
                    let mut f = FramedReader::new(r.inner_mut());
                    f.read_to_end(&mut data).await?;
                } else {
                    read_tunneled_nar(&mut r, &mut w, &mut data).await?;
                }
                if NarHash::digest_of(&data) != req.info.info.nar_hash {
                    w.write_error(&NixError::new("hash mismatch"));
                } else {
                    store.push((req.info.path.clone(), data));
                    w.write_reply(&NoReply);
                }
            }
            Request::AddMultipleToStore(_) => {
                let mut m = MultipleReader::new(r.inner_mut(), store_dir());
                while let Some(i) = m.next_info().await? {
                    let mut data = Vec::new();
                    m.nar().read_to_end(&mut data).await?;
                    store.push((i.path, data));
                }
                m.finish().await?;
                w.write_reply(&NoReply);
            }
            other => w.write_error(&NixError::new(format!(
                "operation {} is not supported",
                other.op()
            ))),
        }
        w.flush().await?;
    }
    Ok(store)
}

async fn pair(
    minor: u8,
) -> (
    Client<BufReader<ReadHalf<DuplexStream>>, WriteHalf<DuplexStream>>,
    tokio::task::JoinHandle<Result<Vec<(StorePath, Vec<u8>)>, ProtocolError>>,
) {
    // A small pipe so that flow control between both sides is exercised.
    let (a, b) = tokio::io::duplex(1024);
    let server = tokio::spawn(serve(b));
    let (r, w) = tokio::io::split(a);
    let offer = ClientHandshake {
        version: ProtocolVersion::new(1, minor),
        features: BTreeSet::new(),
    };
    let client = Client::handshake(BufReader::new(r), w, store_dir(), &offer)
        .await
        .unwrap();
    (client, server)
}

#[tokio::test]
async fn client_and_server_agree_at_every_version() {
    for minor in [21u8, 22, 23, 26, 27, 32, 34, 35, 37, 38] {
        let (mut c, server) = pair(minor).await;
        assert_eq!(c.version(), ProtocolVersion::new(1, minor));
        if minor >= 35 {
            assert_eq!(c.negotiated().trust, TrustLevel::Trusted);
        }
        c.set_options(&SetOptionsRequest::default()).await.unwrap();

        let p1 = path(P1);
        let n1 = nar(&vec![b'x'; 100_000]);
        assert!(!c.is_valid_path(&p1).await.unwrap());
        assert_eq!(
            c.take_messages(),
            vec![StderrMsg::Next("checking\n".into())]
        );

        let req = AddToStoreNarRequest {
            info: ValidPathInfo {
                path: p1.clone(),
                info: info(&n1),
            },
            repair: false,
            dont_check_sigs: false,
        };
        c.add_to_store_nar(&req, &mut &n1[..]).await.unwrap();
        assert!(c.is_valid_path(&p1).await.unwrap());
        assert_eq!(
            c.query_path_info(&p1).await.unwrap().unwrap().nar_size,
            n1.len() as u64
        );

        // Hash mismatch: a typed remote error, the connection goes on.
        let mut bad = req.clone();
        bad.info.info.nar_hash = NarHash::digest_of(b"other");
        let err = c.add_to_store_nar(&bad, &mut &n1[..]).await.unwrap_err();
        assert!(
            matches!(&err, ProtocolError::Remote(e) if e.msg == "hash mismatch"),
            "{err}"
        );

        let mut out = Vec::new();
        assert_eq!(
            c.nar_from_path(&p1, &mut out).await.unwrap(),
            n1.len() as u64
        );
        assert_eq!(out, n1);
        let err = c.nar_from_path(&path(P2), &mut out).await.unwrap_err();
        assert!(matches!(err, ProtocolError::Remote(_)));

        // Unsupported operations answer an error naming them; still usable.
        let err = c
            .call(&typed::BuildPaths(BuildPathsRequest {
                paths: vec![format!("/nix/store/{P1}")],
                mode: 0,
            }))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("BuildPaths"), "{err}");

        if minor >= 32 {
            let p2 = path(P2);
            let n2 = nar(b"two");
            let mut items = vec![(
                ValidPathInfo {
                    path: p2.clone(),
                    info: info(&n2),
                },
                &n2[..],
            )];
            c.add_multiple_to_store(false, false, &mut items)
                .await
                .unwrap();
            assert!(c.is_valid_path(&p2).await.unwrap());
        }
        drop(c);
        let store = server.await.unwrap().unwrap();
        assert_eq!(store[0], (p1, n1));
    }
}
