//! HTTP semantics of every endpoint, driven with curl against the real binary.

mod common;

use std::sync::OnceLock;

use common::{Options, Server, curl, get, narinfo_field};
use harmonia_store_nar_info::NarInfo;
use harmonia_store_path::StoreDir;
use harmonia_test_support::{
    StandardFixture, TOP_BUILD_LOG_LINE, TREE_SYMLINK_OUTSIDE, base_name, hash_part,
};
use harmonia_utils_signature::PublicKey;

struct Fx {
    fx: StandardFixture,
    /// A store path holding a small website: index.html at the root and a sub dir without one.
    site: String,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let fx = common::static_fixture();
        let src = fx.store.scratch_dir().join("site");
        std::fs::create_dir_all(src.join("docs")).unwrap();
        std::fs::write(src.join("index.html"), b"<h1>site</h1>\n").unwrap();
        std::fs::write(src.join("docs/page.txt"), b"a page\n").unwrap();
        std::fs::write(src.join("docs/<b>&amp.txt"), b"odd name\n").unwrap();
        let site = fx.store.add_path(&src);
        Fx { fx, site }
    })
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start_static(&fx().fx.store, Options::default()))
}

fn zstd_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::start_static(
            &fx().fx.store,
            Options {
                extra_config: "enable_compression = true\n",
                ..Options::default()
            },
        )
    })
}

fn narinfo_of(server: &Server, path: &str) -> String {
    let res = get(server, &format!("/{}.narinfo", hash_part(path)));
    assert_eq!(res.status, 200, "narinfo of {path}: {}", res.text());
    res.text()
}

fn nar_url(server: &Server, path: &str) -> String {
    let text = narinfo_of(server, path);
    format!("/{}", narinfo_field(&text, "URL").expect("URL field"))
}

fn assert_short_error(res: &common::Response, status: u16) {
    assert_eq!(res.status, status, "body: {}", res.text());
    assert!(res.body.len() < 200, "long error body: {}", res.text());
    assert!(
        !res.text().contains("/tmp"),
        "error body leaks a path: {}",
        res.text()
    );
    assert_eq!(res.header("cache-control"), Some("no-store"));
}

#[test]
fn nix_cache_info() {
    let res = get(server(), "/nix-cache-info");
    assert_eq!(res.status, 200);
    assert_eq!(
        res.text(),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
    );
}

#[test]
fn narinfo_is_complete_signed_and_cacheable() {
    let f = &fx().fx;
    let store_dir = StoreDir::default();
    let key = PublicKey::parse(&server().public_key).expect("public key");
    let paths: Vec<&str> = f.paths.all.iter().map(String::as_str).collect();
    let infos = f.store.path_info(&paths);
    for path in &paths {
        let info = infos
            .as_array()
            .expect("array")
            .iter()
            .find(|i| i["path"].as_str() == Some(path))
            .expect("path-info of every path");
        let res = get(server(), &format!("/{}.narinfo", hash_part(path)));
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-type"), Some("text/x-nix-narinfo"));
        assert_eq!(res.header("cache-control"), Some("public, max-age=86400"));
        let etag = res.header("etag").expect("etag").to_owned();
        let text = res.text();
        let ni = NarInfo::parse(&store_dir, &text).expect("parse narinfo");
        assert!(
            ni.verify(&store_dir, std::slice::from_ref(&key)),
            "bad signature:\n{text}"
        );
        assert_eq!(store_dir.display(&ni.store_path), *path);
        assert_eq!(ni.compression, "none");
        assert_eq!(Some(ni.nar_size), info["narSize"].as_u64());
        assert_eq!(ni.file_size, Some(ni.nar_size));
        assert_eq!(ni.file_hash.as_ref(), Some(ni.nar_hash.hash()));
        // nix path-info may print SRI or typed nix32 depending on the version.
        let want_hash = info["narHash"].as_str().expect("narHash");
        assert!(
            want_hash == ni.nar_hash.to_string() || want_hash == ni.nar_hash.to_sri(),
            "{want_hash} vs {}",
            ni.nar_hash
        );
        let refs: Vec<String> = ni.references.iter().map(|r| store_dir.display(r)).collect();
        let want: Vec<String> = info["references"]
            .as_array()
            .expect("refs")
            .iter()
            .map(|r| r.as_str().expect("ref").to_owned())
            .collect();
        assert_eq!(refs, want);
        assert_eq!(
            ni.deriver.as_ref().map(|d| store_dir.display(d)),
            info.get("deriver")
                .and_then(|d| d.as_str())
                .map(str::to_owned)
        );
        assert_eq!(
            ni.url,
            format!(
                "nar/{}.nar?hash={}",
                ni.nar_hash.hash().to_nix_base32(),
                hash_part(path)
            )
        );
        // Field order as Nix writes it.
        let keys: Vec<&str> = text.lines().filter_map(|l| l.split(':').next()).collect();
        let order = [
            "StorePath",
            "URL",
            "Compression",
            "FileHash",
            "FileSize",
            "NarHash",
            "NarSize",
            "References",
            "Deriver",
            "Sig",
            "CA",
        ];
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| order.iter().position(|o| o == k).expect("known key"))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] <= w[1]),
            "order: {keys:?}"
        );
        // Conditional request.
        let again = curl(
            server(),
            &format!("/{}.narinfo", hash_part(path)),
            &["-H", &format!("If-None-Match: {etag}")],
        );
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
    }
}

#[test]
fn narinfo_misses_and_malformed_hashes() {
    let unknown = "00000000000000000000000000000000";
    assert_short_error(&get(server(), &format!("/{unknown}.narinfo")), 404);
    for bad in [
        "short",
        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        "%00%01",
        "0000000000000000000000000000000000000000",
    ] {
        let res = get(server(), &format!("/{bad}.narinfo"));
        assert!(matches!(res.status, 400 | 404), "{bad}: {}", res.status);
        assert_short_error(&res, res.status);
    }
    assert_short_error(&get(server(), &format!("/{unknown}.ls")), 404);
    assert_short_error(&get(server(), "/nope"), 404);
    assert_short_error(&get(server(), "/nar/nope"), 404);
}

#[test]
fn nar_full_body_equals_nix_store_dump() {
    let f = &fx().fx;
    for path in &f.paths.all {
        let url = nar_url(server(), path);
        let res = get(server(), &url);
        let dump = f.store.dump(path);
        assert_eq!(res.status, 200);
        assert_eq!(res.body, dump, "NAR of {path}");
        assert_eq!(
            res.header("content-length"),
            Some(dump.len().to_string().as_str())
        );
        assert_eq!(res.header("accept-ranges"), Some("bytes"));
        assert_eq!(res.header("content-type"), Some("application/x-nix-nar"));
        assert_eq!(
            res.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert!(res.header("etag").is_some());
        assert!(res.header("content-encoding").is_none());
    }
}

/// The NAR cache is on by default (under `$XDG_CACHE_HOME/harmonia/nar` here): a directory's first full
/// download leaves a checked copy of its NAR behind, and later downloads and ranges come from it, byte
/// for byte what `nix-store --dump` gives.
#[test]
fn nar_cache_serves_the_same_bytes() {
    let f = &fx().fx;
    let server = Server::start(&f.store, Options::default());
    let nars = server.default_nar_cache();
    let tree = &f.paths.tree;
    let url = nar_url(&server, tree);
    let dump = f.store.dump(tree);
    // HEAD and ranges do not fill the cache; a full download does.
    assert_eq!(curl(&server, &url, &["-I"]).status, 200);
    assert_eq!(curl(&server, &url, &["-r", "0-9"]).status, 206);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(entries(&nars).is_empty(), "{:?}", entries(&nars));
    assert_eq!(get(&server, &url).body, dump);
    let narinfo = narinfo_of(&server, tree);
    let nar_hash = narinfo_field(&narinfo, "NarHash").unwrap();
    let entry = format!("{}.nar", nar_hash.trim_start_matches("sha256:"));
    for _ in 0..200 {
        if entries(&nars).contains(&entry) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert_eq!(entries(&nars), [entry.as_str()]);
    assert_eq!(std::fs::read(nars.join(&entry)).unwrap(), dump);
    // From the cache now: whole, ranges, and the nix-serve URL form.
    assert_eq!(get(&server, &url).body, dump);
    let mid = dump.len() / 2;
    let res = curl(&server, &url, &["-r", &format!("3-{mid}")]);
    assert_eq!(res.status, 206);
    assert_eq!(res.body, &dump[3..=mid]);
    let res = curl(&server, &url, &["-r", "-7"]);
    assert_eq!(res.body, &dump[dump.len() - 7..]);
    // A single file's NAR is not cached: serving the file itself costs no more.
    let big = nar_url(&server, &f.paths.big_file);
    assert_eq!(get(&server, &big).body, f.store.dump(&f.paths.big_file));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(entries(&nars), [entry]);
}

/// `nar_cache_max_size = 0` turns the cache off; a default place that cannot be used only costs the
/// cache, never the service; an explicit `nar_cache_dir` that cannot be used stops start-up.
#[test]
fn nar_cache_off_or_unusable() {
    let f = &fx().fx;
    let tree = &f.paths.tree;
    let dump = f.store.dump(tree);

    let off = Server::start(
        &f.store,
        Options {
            extra_config: "nar_cache_max_size = 0\n",
            ..Options::default()
        },
    );
    assert_eq!(get(&off, &nar_url(&off, tree)).body, dump);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!off.default_nar_cache().exists());

    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    let cache_home = not_a_dir.path().to_str().unwrap();
    let unusable = Server::start(
        &f.store,
        Options {
            env: &[("XDG_CACHE_HOME", cache_home)],
            ..Options::default()
        },
    );
    assert_eq!(get(&unusable, &nar_url(&unusable, tree)).body, dump);
    assert!(
        unusable.log().contains("running without the NAR cache"),
        "{}",
        unusable.log()
    );
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Lookups share short-lived read snapshots; a path registered while the server runs shows up at once.
#[test]
fn narinfo_sees_paths_added_while_serving() {
    let store = harmonia_test_support::FixtureStore::new();
    let src = tempfile::tempdir().unwrap();
    let first = src.path().join("first");
    std::fs::write(&first, b"first\n").unwrap();
    let first = store.add_path(&first);
    let server = Server::start(&store, Options::default());
    assert_eq!(
        narinfo_of(&server, &first).lines().next(),
        Some(&*format!("StorePath: {first}"))
    );

    let second = src.path().join("second");
    std::fs::write(&second, b"second\n").unwrap();
    // Keep the workers busy with lookups until the path is added, then ask for it once.
    for _ in 0..50 {
        assert_eq!(
            get(&server, &format!("/{}.narinfo", hash_part(&first))).status,
            200
        );
    }
    let second = store.add_path(&second);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let res = get(&server, &format!("/{}.narinfo", hash_part(&second)));
    assert_eq!(res.status, 200, "{}", res.text());
}

#[test]
fn nar_nix_serve_url_form_and_mismatches() {
    let f = &fx().fx;
    let path = &f.paths.tree;
    let text = narinfo_of(server(), path);
    let nar_hash = narinfo_field(&text, "NarHash")
        .and_then(|h| h.strip_prefix("sha256:"))
        .expect("NarHash");
    let res = get(
        server(),
        &format!("/nar/{}-{nar_hash}.nar", hash_part(path)),
    );
    assert_eq!(res.status, 200);
    assert_eq!(res.body, f.store.dump(path));
    // Another path's NAR hash with this path's hash: 404, in both forms.
    let other = narinfo_of(server(), &f.paths.text_file);
    let other_hash = narinfo_field(&other, "NarHash")
        .and_then(|h| h.strip_prefix("sha256:"))
        .expect("NarHash");
    assert_short_error(
        &get(
            server(),
            &format!("/nar/{}-{other_hash}.nar", hash_part(path)),
        ),
        404,
    );
    assert_short_error(
        &get(
            server(),
            &format!("/nar/{other_hash}.nar?hash={}", hash_part(path)),
        ),
        404,
    );
    // Missing or malformed hashes.
    assert_short_error(&get(server(), &format!("/nar/{nar_hash}.nar")), 400);
    assert_short_error(
        &get(server(), &format!("/nar/{nar_hash}.nar?hash=xyz")),
        400,
    );
    assert_short_error(
        &get(
            server(),
            "/nar/abc.nar?hash=00000000000000000000000000000000",
        ),
        400,
    );
}

#[test]
fn nar_ranges() {
    let f = &fx().fx;
    for path in [&f.paths.big_file, &f.paths.tree, &f.paths.top] {
        let url = nar_url(server(), path);
        let dump = f.store.dump(path);
        let size = dump.len();
        let cases: Vec<(String, usize, usize)> = vec![
            ("bytes=0-99".into(), 0, 99),
            ("bytes=100-".into(), 100, size - 1),
            ("bytes=-100".into(), size - 100, size - 1),
            (
                format!("bytes={}-{}", size / 3, size / 2),
                size / 3,
                size / 2,
            ),
            (
                format!("bytes={}-{}", size - 1, size + 50),
                size - 1,
                size - 1,
            ),
            (format!("bytes=-{}", size * 2), 0, size - 1),
            ("bytes=7-7".into(), 7, 7),
        ];
        for (range, start, end) in cases {
            let res = curl(server(), &url, &["-H", &format!("Range: {range}")]);
            assert_eq!(res.status, 206, "{range} on {path}: {}", res.text());
            assert_eq!(
                res.header("content-range"),
                Some(format!("bytes {start}-{end}/{size}").as_str()),
                "{range}"
            );
            assert_eq!(
                res.header("content-length"),
                Some((end - start + 1).to_string().as_str())
            );
            assert_eq!(res.body, &dump[start..=end], "{range} on {path}");
        }
        for bad in [
            format!("bytes={size}-"),
            format!("bytes={}-{}", size + 10, size + 20),
            "bytes=-0".into(),
            "bytes=9-3".into(),
            "bytes=abc".into(),
            "bytes=1-x".into(),
        ] {
            let res = curl(server(), &url, &["-H", &format!("Range: {bad}")]);
            assert_short_error(&res, 416);
            assert_eq!(
                res.header("content-range"),
                Some(format!("bytes */{size}").as_str()),
                "{bad}"
            );
        }
        // Several ranges or another unit: the whole NAR.
        for full in ["bytes=0-1,5-9", "lines=1-2"] {
            let res = curl(server(), &url, &["-H", &format!("Range: {full}")]);
            assert_eq!(res.status, 200, "{full}");
            assert_eq!(res.body, dump);
        }
        // If-Range with a stale validator: the whole NAR.
        let res = curl(
            server(),
            &url,
            &["-H", "Range: bytes=0-9", "-H", "If-Range: \"stale\""],
        );
        assert_eq!(res.status, 200);
        assert_eq!(res.body.len(), size);
    }
}

#[test]
fn head_requests_have_headers_but_no_body() {
    let f = &fx().fx;
    let url = nar_url(server(), &f.paths.big_file);
    let get_res = get(server(), &url);
    let head = curl(server(), &url, &["-I"]);
    assert_eq!(head.status, 200);
    // On the wire: the head, then nothing (the connection closes after it).
    let raw = common::raw_request(
        server().port,
        format!("HEAD {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "HEAD response carried a body: {text}"
    );
    assert_eq!(
        head.header("content-length"),
        get_res.header("content-length")
    );
    assert_eq!(head.header("etag"), get_res.header("etag"));
    let head = curl(server(), &url, &["-I", "-H", "Range: bytes=10-19"]);
    assert_eq!(head.status, 206);
    assert_eq!(head.header("content-length"), Some("10"));
    let ni = format!("/{}.narinfo", hash_part(&f.paths.top));
    let head = curl(server(), &ni, &["-I"]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(get(server(), &ni).body.len().to_string().as_str())
    );
    assert_eq!(curl(server(), "/nix-cache-info", &["-I"]).status, 200);
    assert_eq!(curl(server(), "/nope", &["-I"]).status, 404);
}

#[test]
fn zstd_only_when_enabled_and_accepted_and_never_on_ranges() {
    let f = &fx().fx;
    for path in [&f.paths.tree, &f.paths.big_file, &f.paths.text_file] {
        let dump = f.store.dump(path);
        let url = nar_url(zstd_server(), path);
        let res = curl(zstd_server(), &url, &["-H", "Accept-Encoding: zstd"]);
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-encoding"), Some("zstd"));
        assert_eq!(res.header("vary"), Some("Accept-Encoding"));
        let etag = res.header("etag").expect("etag").to_owned();
        let decoded = zstd::decode_all(res.body.as_slice()).expect("valid zstd");
        assert_eq!(decoded, dump, "zstd round trip of {path}");
        // No Accept-Encoding: identity, with a different validator.
        let plain = get(zstd_server(), &url);
        assert!(plain.header("content-encoding").is_none());
        assert_eq!(plain.body, dump);
        assert_ne!(plain.header("etag"), Some(etag.as_str()));
        // Ranges are never compressed.
        let ranged = curl(
            zstd_server(),
            &url,
            &["-H", "Accept-Encoding: zstd", "-H", "Range: bytes=5-20"],
        );
        assert_eq!(ranged.status, 206);
        assert!(ranged.header("content-encoding").is_none());
        assert_eq!(ranged.body, &dump[5..=20]);
        // q=0 refuses zstd.
        let refused = curl(zstd_server(), &url, &["-H", "Accept-Encoding: zstd;q=0"]);
        assert!(refused.header("content-encoding").is_none());
    }
    // Compression off: never zstd, whatever the client accepts.
    let url = nar_url(server(), &f.paths.tree);
    let res = curl(server(), &url, &["-H", "Accept-Encoding: zstd"]);
    assert!(res.header("content-encoding").is_none());
}

#[test]
fn ls_listing_has_nar_offsets_into_the_nar() {
    let f = &fx().fx;
    for path in [&f.paths.tree, &f.paths.big_file, &f.paths.top] {
        let res = get(server(), &format!("/{}.ls", hash_part(path)));
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("content-type"), Some("application/json"));
        let listing: serde_json::Value = serde_json::from_slice(&res.body).expect("json");
        assert_eq!(listing["version"], 1);
        let dump = f.store.dump(path);
        let mut checked = 0;
        check_offsets(
            &listing["root"],
            &f.store.real_path(path),
            &dump,
            &mut checked,
        );
        assert!(checked > 0, "no file checked in {path}");
    }
}

fn check_offsets(
    entry: &serde_json::Value,
    real: &std::path::Path,
    dump: &[u8],
    checked: &mut usize,
) {
    match entry["type"].as_str() {
        Some("regular") => {
            let off = entry["narOffset"].as_u64().expect("narOffset") as usize;
            let size = entry["size"].as_u64().expect("size") as usize;
            let contents = std::fs::read(real).expect("read file");
            assert_eq!(
                &dump[off..off + size],
                contents.as_slice(),
                "{}",
                real.display()
            );
            *checked += 1;
        }
        Some("directory") => {
            for (name, child) in entry["entries"].as_object().expect("entries") {
                check_offsets(child, &real.join(name), dump, checked);
            }
        }
        Some("symlink") => {}
        other => panic!("unknown entry type {other:?}"),
    }
}

#[test]
fn build_logs_plain_or_bzip2() {
    let f = &fx().fx;
    let url = format!("/log/{}", base_name(&f.paths.top_drv));
    let res = get(server(), &url);
    assert_eq!(res.status, 200);
    assert!(res.header("content-encoding").is_none());
    assert!(res.text().contains(TOP_BUILD_LOG_LINE), "{}", res.text());
    let bz = curl(server(), &url, &["-H", "Accept-Encoding: gzip, bzip2"]);
    assert_eq!(bz.status, 200);
    assert_eq!(bz.header("content-encoding"), Some("bzip2"));
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut bzip2::read::BzDecoder::new(bz.body.as_slice()),
        &mut text,
    )
    .expect("bzip2");
    assert_eq!(text.as_bytes(), res.body.as_slice());
    // A derivation without a log, a non-derivation and garbage.
    assert_short_error(
        &get(
            server(),
            &format!(
                "/log/{}",
                base_name(&f.paths.dep_drv).replace("fixture-dep", "fixture-nolog")
            ),
        ),
        404,
    );
    assert_short_error(
        &get(server(), &format!("/log/{}", base_name(&f.paths.text_file))),
        404,
    );
    assert_short_error(&get(server(), "/log/..%2f..%2fetc%2fpasswd"), 400);
}

#[test]
fn serve_files_listings_index_and_escapes() {
    let f = &fx().fx;
    let tree = hash_part(&f.paths.tree);
    let res = get(server(), &format!("/serve/{tree}/README"));
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"a tree with every shape\n");
    let res = get(server(), &format!("/serve/{tree}/links/relative"));
    assert_eq!(res.status, 200, "relative symlink inside the path");
    assert_eq!(res.body, b"nested file\n");
    let res = get(
        server(),
        &format!("/serve/{tree}/%C3%BCn%C3%AFc%C3%B6d%C3%A9"),
    );
    assert_eq!(res.status, 200);
    let listing = get(server(), &format!("/serve/{tree}/"));
    assert_eq!(listing.status, 200);
    assert!(listing.text().contains("README"));
    assert_eq!(
        get(server(), &format!("/serve/{tree}/nested")).status,
        301,
        "directories redirect to their slash form"
    );
    // Escapes.
    for bad in [
        TREE_SYMLINK_OUTSIDE.to_owned(),
        "../".to_owned(),
        "nested/../../..".to_owned(),
        "%2e%2e/%2e%2e/etc/passwd".to_owned(),
        "nested%2f..%2f..%2f".to_owned(),
        "missing".to_owned(),
    ] {
        let res = get(server(), &format!("/serve/{tree}/{bad}"));
        assert_short_error(&res, 404);
    }
    // Symlink to another store path.
    let top = hash_part(&f.paths.top);
    let res = get(server(), &format!("/serve/{top}/dep-link"));
    assert_eq!(res.status, 200);
    assert_eq!(res.body, b"dependency contents\n");
    // index.html, and a listing with names escaped.
    let site = hash_part(&fx().site);
    let res = get(server(), &format!("/serve/{site}/"));
    assert_eq!(res.body, b"<h1>site</h1>\n");
    assert!(
        res.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    let docs = get(server(), &format!("/serve/{site}/docs/"));
    assert!(docs.text().contains("page.txt"));
    assert!(
        docs.text().contains("&lt;b&gt;&amp;amp.txt"),
        "{}",
        docs.text()
    );
    assert!(!docs.text().contains("<b>"));
    assert_short_error(&get(server(), "/serve/notahash/x"), 400);
    assert_short_error(
        &get(server(), "/serve/00000000000000000000000000000000/x"),
        404,
    );
}

#[test]
fn realisations_are_looked_up_and_validated() {
    let id = format!("sha256:{}!out", "ab".repeat(32));
    assert_short_error(&get(server(), &format!("/realisations/{id}.doi")), 404);
    assert_short_error(&get(server(), "/realisations/garbage.doi"), 400);
    let drv = base_name(&fx().fx.paths.top_drv);
    assert_short_error(
        &get(server(), &format!("/build-trace-v2/{drv}/out.doi")),
        404,
    );
    assert_short_error(&get(server(), "/build-trace-v2/nope/out.doi"), 400);
}

#[test]
fn landing_health_version() {
    let res = get(server(), "/");
    assert_eq!(res.status, 200);
    let text = res.text();
    assert!(
        text.contains(&format!("substituters = {}", server().url)),
        "{text}"
    );
    assert!(
        text.contains(&format!("trusted-public-keys = {}", server().public_key)),
        "{text}"
    );
    let res = curl(server(), "/", &["-H", "Host: <script>"]);
    assert!(!res.text().contains("<script>"));
    assert_eq!(get(server(), "/health").status, 200);
    let v = get(server(), "/version");
    assert_eq!(v.status, 200);
    assert!(v.text().contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn metrics_use_route_templates() {
    let f = &fx().fx;
    let _ = get(
        server(),
        &format!("/{}.narinfo", hash_part(&f.paths.text_file)),
    );
    let url = nar_url(server(), &f.paths.text_file);
    let nar = get(server(), &url);
    assert_eq!(nar.status, 200);
    let _ = get(server(), "/does-not-exist");
    let m = get(server(), "/metrics");
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(
        text.contains(
            "harmonia_http_requests_total{method=\"GET\",path=\"/{hash}.narinfo\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(text.contains("path=\"/nar/{file}\""), "{text}");
    assert!(
        text.contains("harmonia_http_request_duration_seconds_bucket{method=\"GET\",path=\"/{hash}.narinfo\",le=\"0.0001\"}"),
        "{text}"
    );
    assert!(text.contains("le=\"1\""), "{text}");
    assert!(text.contains("harmonia_nar_bytes_served_total"), "{text}");
    assert!(text.contains("harmonia_nars_served_total"), "{text}");
    // Raw URLs never become labels.
    assert!(!text.contains(hash_part(&f.paths.text_file)), "{text}");
    assert!(!text.contains("does-not-exist"), "{text}");
}
