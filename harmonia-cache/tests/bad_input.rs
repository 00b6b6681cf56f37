//! Hostile and broken clients: malformed requests get short 4xx answers, never 5xx, panics or
//! paths; garbage on the socket and clients that stop reading do not disturb anyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Options, Server, curl, get, raw_request, raw_status};
use harmonia_test_support::{StandardFixture, hash_part, pseudo_random_bytes};

fn fixture() -> &'static StandardFixture {
    static FIXTURE: OnceLock<StandardFixture> = OnceLock::new();
    FIXTURE.get_or_init(common::static_fixture)
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start_static(
            &fixture().store,
            Options {
                extra_config: "enable_compression = true\n",
                ..Options::default()
            },
        )
    })
}

fn assert_healthy() {
    let res = get(server(), "/nix-cache-info");
    assert_eq!(
        res.status,
        200,
        "server unhealthy; log:\n{}",
        server().log()
    );
    assert!(!server().log().contains("panicked"), "{}", server().log());
}

fn nar_url() -> String {
    let text = get(
        server(),
        &format!("/{}.narinfo", hash_part(&fixture().paths.big_file)),
    )
    .text();
    let url = common::narinfo_field(&text, "URL").expect("URL").to_owned();
    format!("/{url}")
}

#[test]
fn malformed_urls_get_short_4xx() {
    let nar_hash = "1".repeat(52);
    let paths = [
        "/%ff%fe.narinfo".to_owned(),
        "/..%2f..%2fetc%2fpasswd.narinfo".to_owned(),
        "/../../etc/passwd".to_owned(),
        "/nar/%00.nar".to_owned(),
        format!("/nar/{nar_hash}.nar?hash=%2e%2e"),
        format!("/nar/{nar_hash}.nar?hash={}", "z".repeat(4000)),
        "/nar/..%2f..%2fetc%2fpasswd".to_owned(),
        "/log/%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_owned(),
        "/log/".to_owned(),
        "/serve/".to_owned(),
        format!("/serve/{}/%00", "0".repeat(32)),
        format!("/serve/{}/..", hash_part(&fixture().paths.tree)),
        format!(
            "/serve/{}/%2e%2e%2f%2e%2e%2fetc",
            hash_part(&fixture().paths.tree)
        ),
        "/realisations/%ff!out.doi".to_owned(),
        "/realisations/sha256:zz!out.doi".to_owned(),
        "/build-trace-v2/x/y/z.doi".to_owned(),
        format!("/{}", "a".repeat(8000)),
    ];
    for p in &paths {
        let res = get(server(), p);
        assert!(
            (400..500).contains(&res.status),
            "{p}: status {} body {}",
            res.status,
            res.text()
        );
        assert!(res.body.len() < 200, "{p}: long body");
        let body = res.text();
        assert!(
            !body.contains("/tmp") && !body.contains("/nix/"),
            "{p}: {body}"
        );
    }
    assert_healthy();
}

#[test]
fn malformed_headers_get_4xx_or_are_ignored() {
    let url = nar_url();
    let long = format!("bytes={}", "9".repeat(5000));
    let headers: Vec<Vec<&str>> = vec![
        vec!["-H", "Range: bytes=--1"],
        vec!["-H", "Range: bytes=1-2-3"],
        vec!["-H", "Range: bytes= , ,"],
        vec!["-H", "Range: bytes=18446744073709551615-"],
        vec!["-H", "Range: bytes=-18446744073709551616"],
        vec!["-H", &long],
        vec!["-H", "Accept-Encoding: zstd;q=nonsense, ;;;"],
        vec!["-H", "If-None-Match: \"unterminated"],
        vec!["-H", "If-Range: garbage", "-H", "Range: bytes=0-1"],
    ];
    for args in headers {
        let res = curl(server(), &url, &args);
        assert!(
            matches!(res.status, 200 | 206 | 400 | 416),
            "{args:?}: {}",
            res.status
        );
        assert!(res.status == 200 || res.status == 206 || res.body.len() < 200);
    }
    // Bytes that are not text in a header value.
    let mut req = format!("GET {url} HTTP/1.1\r\nHost: x\r\nRange: bytes=").into_bytes();
    req.extend_from_slice(b"\xff\xfe-1\r\nConnection: close\r\n\r\n");
    let raw = raw_request(server().port, &req);
    let status = raw_status(&raw).expect("a response");
    assert!(matches!(status, 200 | 416 | 400), "{status}");
    assert_healthy();
}

#[test]
fn broken_http_on_the_socket() {
    let port = server().port;
    let attempts: Vec<Vec<u8>> = vec![
        pseudo_random_bytes(1, 4096),
        pseudo_random_bytes(2, 100),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"FOO /nix-cache-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(100_000)
        )
        .into_bytes(),
        b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n".to_vec(),
    ];
    for req in attempts {
        let raw = raw_request(port, &req);
        if let Some(status) = raw_status(&raw) {
            assert!(
                status < 500,
                "status {status} for {:?}",
                String::from_utf8_lossy(&req[..req.len().min(60)])
            );
        }
        assert_healthy();
    }
}

#[test]
fn a_client_that_stops_reading_does_not_block_others() {
    let url = nar_url();
    // Several clients request the 3 MB NAR (and the zstd variant) and never read.
    let mut stalled = Vec::new();
    for i in 0..8 {
        let mut s = TcpStream::connect(("127.0.0.1", server().port)).expect("connect");
        let enc = if i % 2 == 0 {
            "Accept-Encoding: zstd\r\n"
        } else {
            ""
        };
        s.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n{enc}\r\n").as_bytes())
            .expect("write");
        stalled.push(s);
    }
    // Half-open: a client that sends half a request head and waits.
    let mut half = TcpStream::connect(("127.0.0.1", server().port)).expect("connect");
    half.write_all(b"GET /nix-cache-info HTTP/1.1\r\nHo")
        .expect("write");
    for _ in 0..20 {
        let res = get(
            server(),
            &format!("/{}.narinfo", hash_part(&fixture().paths.top)),
        );
        assert_eq!(res.status, 200);
    }
    let res = get(server(), &url);
    assert_eq!(res.status, 200);
    assert_eq!(res.body, fixture().store.dump(&fixture().paths.big_file));
    // The stalled clients can still finish their downloads afterwards.
    let mut first = stalled.remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let want = fixture().store.dump(&fixture().paths.big_file).len();
    while got.len() < want {
        match first.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        got.len() >= want,
        "stalled client got only {} bytes",
        got.len()
    );
    drop(stalled);
    assert_healthy();
}
