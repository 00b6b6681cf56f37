//! Bad input never panics, hangs or allocates by a claimed length: truncated data,
//! absurd lengths, unknown op codes, invalid UTF-8 and store paths give typed errors.

mod common;

use common::*;
use harmonia_protocol::handshake::{ServerHandshake, TrustLevel};
use harmonia_protocol::nar::NarScanner;
use harmonia_protocol::stderr::StderrMsg;
use harmonia_protocol::{PROTOCOL_VERSION, ProtocolError, read_request, server_handshake};
use proptest::prelude::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[tokio::test]
async fn absurd_lengths_are_refused_before_allocating() {
    // A string claiming 2^60 bytes.
    let bytes = cat(&[u(29), u(1 << 60)]);
    let err = read_request(&mut reader(&bytes, 38)).await.unwrap_err();
    assert!(
        matches!(err, ProtocolError::TooLong { len, .. } if len == 1 << 60),
        "{err}"
    );

    // A set claiming 2^60 items.
    let bytes = cat(&[u(31), u(1 << 60)]);
    let err = read_request(&mut reader(&bytes, 38)).await.unwrap_err();
    assert!(matches!(err, ProtocolError::TooLong { .. }), "{err}");

    // Under the caps but with the data missing: an EOF error, after allocating only what
    // arrived (the test would take seconds and gigabytes otherwise).
    for _ in 0..1000 {
        let bytes = cat(&[u(8), s("name"), u((256 << 20) - 1), b"abc".to_vec()]);
        let err = read_request(&mut reader(&bytes, 38)).await.unwrap_err();
        assert!(err.is_eof(), "{err}");
        let bytes = cat(&[u(31), u(1 << 23)]);
        let err = read_request(&mut reader(&bytes, 38)).await.unwrap_err();
        assert!(err.is_eof(), "{err}");
    }
}

#[tokio::test]
async fn unknown_ops_and_clean_eof() {
    let err = read_request(&mut reader(&u(99), 38)).await.unwrap_err();
    assert!(matches!(err, ProtocolError::UnknownOp(99)));
    // Removed ops (e.g. 3 HasSubstitutes, 27 ImportPaths) are unknown too.
    for code in [0u64, 3, 4, 5, 16, 24, 25, 27, 48, u64::MAX] {
        let err = read_request(&mut reader(&u(code), 38)).await.unwrap_err();
        assert!(matches!(err, ProtocolError::UnknownOp(c) if c == code));
    }
    assert!(read_request(&mut reader(&[], 38)).await.unwrap().is_none());
    // Half an op code is a truncation, not a clean end.
    assert!(
        read_request(&mut reader(&[1, 0, 0], 38))
            .await
            .unwrap_err()
            .is_eof()
    );
}

#[tokio::test]
async fn invalid_text_and_paths() {
    let bytes = cat(&[u(1), s(b"/nix/store/\xff\xfe")]);
    assert!(matches!(
        read_request(&mut reader(&bytes, 38)).await.unwrap_err(),
        ProtocolError::InvalidUtf8 { .. }
    ));

    for bad in [
        "/tmp/00bgd045z0d4icpbc2yyz4gx48ak44la-x",
        "/nix/store/../etc/passwd",
        "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-x/sub",
        "/nix/store/short-x",
        "/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x",
        "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-",
        "",
    ] {
        let bytes = cat(&[u(26), s(bad)]);
        let err = read_request(&mut reader(&bytes, 38)).await.unwrap_err();
        assert!(
            matches!(err, ProtocolError::InvalidStorePath { .. }),
            "{bad:?}: {err}"
        );
    }

    // Non-zero padding.
    let mut bytes = cat(&[u(29), s("abc")]);
    let last = bytes.len() - 1;
    bytes[last] = 1;
    assert!(matches!(
        read_request(&mut reader(&bytes, 38)).await.unwrap_err(),
        ProtocolError::NonZeroPadding
    ));

    // A bad NAR hash and content address.
    let info = cat(&[
        u(39),
        s(format!("/nix/store/{P1}")),
        s(""),
        s("zz"),
        u(0),
        u(0),
        u(0),
        u(0),
        u(0),
        s(""),
    ]);
    let err = read_request(&mut reader(&info, 38)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::InvalidValue {
                what: "NAR hash",
                ..
            }
        ),
        "{err}"
    );
    let h = harmonia_utils_hash::NarHash::digest_of(b"")
        .hash()
        .to_base16();
    let info = cat(&[
        u(39),
        s(format!("/nix/store/{P1}")),
        s(""),
        s(h),
        u(0),
        u(0),
        u(0),
        u(0),
        u(0),
        s("fixed:bogus"),
    ]);
    let err = read_request(&mut reader(&info, 38)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::InvalidValue {
                what: "content address",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn bad_stderr_messages() {
    let err = reader(&u(0x1234), 38)
        .read::<StderrMsg>()
        .await
        .unwrap_err();
    assert!(matches!(err, ProtocolError::UnknownStderr(0x1234)));
    let bytes = cat(&[u(0x63787470), s("NotAnError")]);
    assert!(reader(&bytes, 38).read::<StderrMsg>().await.is_err());
}

fn handshake_info() -> ServerHandshake {
    ServerHandshake {
        version: PROTOCOL_VERSION,
        nix_version: "x".into(),
        trust: TrustLevel::Unknown,
        features: Default::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes after a random op code at a random version: an error or a request,
    /// never a panic.
    #[test]
    fn random_requests_never_panic(minor in 21u8..=38, op in 0u64..50, tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let bytes = cat(&[u(op), tail]);
        let _ = rt().block_on(read_request(&mut reader(&bytes, minor)));
    }

    /// Random bytes where small numbers are likely (so deeper paths are reached).
    #[test]
    fn structured_garbage_never_panics(minor in 21u8..=38, op in 0u64..50, words in proptest::collection::vec(prop_oneof![0u64..4, 0u64..100, any::<u64>()], 0..40)) {
        let bytes: Vec<u8> = std::iter::once(op).chain(words).flat_map(u64::to_le_bytes).collect();
        let _ = rt().block_on(read_request(&mut reader(&bytes, minor)));
        let _ = rt().block_on(reader(&bytes, minor).read::<StderrMsg>());
    }

    #[test]
    fn random_handshakes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..100), minor in 0u64..0x300) {
        let bytes = cat(&[u(0x6e697863), u(minor), tail]);
        let mut r = reader(&bytes, 38);
        let mut w = writer(38);
        let _ = rt().block_on(server_handshake(&mut r, &mut w, &handshake_info()));
    }

    #[test]
    fn random_nars_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = NarScanner::new().feed(&data);
    }
}

#[tokio::test]
async fn bad_add_multiple_streams() {
    use harmonia_protocol::multiple::MultipleReader;
    // An absurd count inside the frames.
    let wire = cat(&[u(8), u(1 << 60), u(0)]);
    let mut m = MultipleReader::new(&wire[..], store_dir());
    assert!(matches!(
        m.next_info().await,
        Err(ProtocolError::TooLong { .. })
    ));
    // A count of 2 but the stream ends after the count.
    let wire = cat(&[u(8), u(2), u(0)]);
    let mut m = MultipleReader::new(&wire[..], store_dir());
    assert!(m.next_info().await.unwrap_err().is_eof());
    // A frame longer than allowed.
    let wire = cat(&[u(1 << 40)]);
    let mut m = MultipleReader::new(&wire[..], store_dir());
    assert!(m.next_info().await.is_err());
    // Zero paths: done at once, and `finish` consumes the terminator only.
    let wire = cat(&[u(8), u(0), u(0), u(42)]);
    let mut rest = &wire[..];
    let mut m = MultipleReader::new(&mut rest, store_dir());
    assert!(m.next_info().await.unwrap().is_none());
    m.finish().await.unwrap();
    assert_eq!(rest, &u(42)[..]);
}

/// A text field the parsers below see (hash, content address, store path, derived path),
/// built from the characters that reach their deeper branches.
fn text_field() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("sha256".to_owned()),
        Just("sha1".to_owned()),
        Just("md5".to_owned()),
        Just("sha512".to_owned()),
        Just("fixed".to_owned()),
        Just("text".to_owned()),
        Just("r".to_owned()),
        Just("/nix/store/".to_owned()),
        "[:!,*=/-]{1,2}",
        "[0-9a-z+/=]{0,140}",
        "[\\PC]{0,8}",
    ];
    proptest::collection::vec(part, 0..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// NAR hashes, content addresses, store paths and derived paths that look almost
    /// right reach the text parsers of the lower crates: an error or a value, never a
    /// panic.
    #[test]
    fn text_fields_never_panic(text in text_field(), minor in 21u8..=38) {
        let rt = rt();
        let field = s(&text);
        // QueryPathInfo reply: deriver, NAR hash, references, times, then (1.16+) ca.
        let info = cat(&[s(""), field.clone(), u(0), u(0), u(0), u(0), u(0), field.clone()]);
        let _ = rt.block_on(reader(&info, minor).read::<harmonia_protocol::types::UnkeyedValidPathInfo>());
        let info = cat(&[s(""), s("0".repeat(64)), u(0), u(0), u(0), u(0), u(0), field.clone()]);
        let _ = rt.block_on(reader(&info, minor).read::<harmonia_protocol::types::UnkeyedValidPathInfo>());
        let _ = rt.block_on(read_request(&mut reader(&cat(&[u(1), field.clone()]), minor)));
        let _ = rt.block_on(read_request(&mut reader(&cat(&[u(45), field.clone()]), minor)));
        let _ = harmonia_protocol::types::DerivedPath::parse(&Default::default(), &text);
    }
}
