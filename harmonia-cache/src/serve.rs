//! `/serve/<hash>/<path>`: files inside a store path, e.g. to host a website from the store.
//!
//! Every request path is resolved component by component against the store: `..`, `.` and encoded
//! slashes in the request are refused, and symlinks are followed only while they stay inside the
//! store (absolute targets must name the store directory, relative ones may not climb above it).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use harmonia_store_path::{StorePath, StorePathHash};
use http::{HeaderValue, Method, StatusCode, Uri, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str};
use tokio_util::io::ReaderStream;

use crate::app::{SharedState, blocking, full_response};
use crate::error::{ServerError, ServerResult};
use crate::http_util::html_escape;

/// Symlink hops allowed while resolving one request (Linux allows 40).
const MAX_SYMLINK_HOPS: usize = 40;
/// Store contents never change, but the hash-to-path mapping is the cache's to decide: a day.
const CACHE_SERVE: HeaderValue = HeaderValue::from_static("public, max-age=86400");
/// Characters left as they are in listing links.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'+');

/// A request path resolved inside the real store.
#[derive(Debug, PartialEq, Eq)]
enum Resolved {
    File(PathBuf),
    Dir(PathBuf),
}

/// Resolves `components` (first the store path base name) below `real_store`, following symlinks
/// only while they stay inside the store. Any escape or missing entry is `NotFound`.
fn resolve(
    real_store: &Path,
    virtual_store: &str,
    components: Vec<Vec<u8>>,
) -> ServerResult<Resolved> {
    let mut pending: Vec<Vec<u8>> = components.into_iter().rev().collect();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_slice() {
            b"" | b"." => continue,
            b".." => {
                // Only symlink targets can contain `..`; the store directory itself is the
                // ceiling (from there only another store path may be entered).
                stack.pop().ok_or(ServerError::NotFound)?;
                continue;
            }
            _ => {}
        }
        if c.contains(&0) {
            return Err(ServerError::NotFound);
        }
        if stack.is_empty() {
            // The first component must be a store path, not e.g. `.links`.
            let name = std::str::from_utf8(&c).map_err(|_| ServerError::NotFound)?;
            name.parse::<StorePath>()
                .map_err(|_| ServerError::NotFound)?;
        }
        stack.push(c);
        let real = join(real_store, &stack);
        let md = std::fs::symlink_metadata(&real).map_err(|_| ServerError::NotFound)?;
        if md.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(ServerError::NotFound);
            }
            let target = std::fs::read_link(&real).map_err(|_| ServerError::NotFound)?;
            stack.pop();
            let target = target.as_os_str().as_bytes();
            let relative: &[u8] = if target.first() == Some(&b'/') {
                let inside = strip_dir(target, virtual_store.as_bytes())
                    .or_else(|| strip_dir(target, real_store.as_os_str().as_bytes()))
                    .ok_or(ServerError::NotFound)?;
                stack.clear();
                inside
            } else {
                target
            };
            if relative.is_empty() && stack.is_empty() {
                return Err(ServerError::NotFound);
            }
            for part in relative.split(|b| *b == b'/').rev() {
                pending.push(part.to_vec());
            }
        }
    }
    if stack.is_empty() {
        return Err(ServerError::NotFound);
    }
    let real = join(real_store, &stack);
    let md = std::fs::metadata(&real).map_err(|_| ServerError::NotFound)?;
    if md.is_dir() {
        Ok(Resolved::Dir(real))
    } else if md.is_file() {
        Ok(Resolved::File(real))
    } else {
        Err(ServerError::NotFound)
    }
}

/// `target` relative to `dir` if it lies strictly inside it.
fn strip_dir<'a>(target: &'a [u8], dir: &[u8]) -> Option<&'a [u8]> {
    let rest = target.strip_prefix(dir)?;
    rest.strip_prefix(b"/")
}

fn join(root: &Path, parts: &[Vec<u8>]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(OsStr::from_bytes(part));
    }
    p
}

/// Splits and percent-decodes the request path below `/serve/<hash>/`.
fn request_components(sub: &str) -> ServerResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for seg in sub.split('/') {
        if seg.is_empty() {
            continue;
        }
        let decoded: Vec<u8> = percent_decode_str(seg).collect();
        if decoded == b"." || decoded == b".." || decoded.contains(&b'/') || decoded.contains(&0) {
            return Err(ServerError::NotFound);
        }
        out.push(decoded);
    }
    Ok(out)
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(OsStr::to_str)
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("txt" | "md" | "rst" | "nix" | "sh" | "log") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("pdf") => "application/pdf",
        Some("wasm") => "application/wasm",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        _ => "application/octet-stream",
    }
}

enum Page {
    File(PathBuf),
    Listing(String),
    Redirect,
}

fn listing_html(dir: &Path, url_path: &str) -> ServerResult<String> {
    let mut names: Vec<(Vec<u8>, bool)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        names.push((entry.file_name().as_bytes().to_vec(), is_dir));
    }
    names.sort();
    let title = html_escape(&percent_decode_str(url_path).decode_utf8_lossy());
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<ul>\n<li><a href=\"../\">../</a></li>\n"
    );
    for (name, is_dir) in names {
        let href = percent_encoding::percent_encode(&name, PATH_SEGMENT).to_string();
        let shown = html_escape(&String::from_utf8_lossy(&name));
        let slash = if is_dir { "/" } else { "" };
        html.push_str(&format!(
            "<li><a href=\"{href}{slash}\">{shown}{slash}</a></li>\n"
        ));
    }
    html.push_str("</ul></body></html>\n");
    Ok(html)
}

/// `GET|HEAD /serve/<hash>[/<path>]`.
pub async fn serve(
    State(state): State<SharedState>,
    method: Method,
    uri: Uri,
) -> ServerResult<Response> {
    let rest = uri
        .path()
        .strip_prefix("/serve/")
        .ok_or(ServerError::NotFound)?;
    let (hash, sub) = rest.split_once('/').unwrap_or((rest, ""));
    let hash: StorePathHash = hash
        .parse()
        .map_err(|_| ServerError::BadRequest("malformed store path hash\n"))?;
    let components = request_components(sub)?;
    let wants_dir = uri.path().ends_with('/');
    let url_path = uri.path().to_owned();
    let st = state.clone();
    let page = blocking(move || {
        let path = st
            .db
            .with_conn(|db| db.query_path_from_hash_part(&hash))?
            .ok_or(ServerError::NotFound)?;
        let mut all = Vec::with_capacity(components.len() + 1);
        all.push(path.to_string().into_bytes());
        all.extend(components.iter().cloned());
        match resolve(&st.config.real_nix_store, &st.config.virtual_nix_store, all)? {
            Resolved::File(f) => Ok(Page::File(f)),
            Resolved::Dir(_) if !wants_dir => Ok(Page::Redirect),
            Resolved::Dir(d) => {
                let mut index = Vec::with_capacity(components.len() + 2);
                index.push(path.to_string().into_bytes());
                index.extend(components);
                index.push(b"index.html".to_vec());
                match resolve(
                    &st.config.real_nix_store,
                    &st.config.virtual_nix_store,
                    index,
                ) {
                    Ok(Resolved::File(f)) => Ok(Page::File(f)),
                    _ => Ok(Page::Listing(listing_html(&d, &url_path)?)),
                }
            }
        }
    })
    .await?;
    let response = match page {
        Page::Redirect => {
            let location = format!("{}/", uri.path());
            Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header(header::LOCATION, location)
                .header(header::CACHE_CONTROL, CACHE_SERVE)
                .body(Body::empty())
        }
        Page::Listing(html) => {
            return Ok(full_response(
                "text/html; charset=utf-8",
                CACHE_SERVE,
                Bytes::from(html),
            ));
        }
        Page::File(path) => {
            let file = tokio::fs::File::open(&path).await?;
            let len = file.metadata().await?.len();
            let body = if method == Method::HEAD {
                Body::empty()
            } else {
                Body::from_stream(ReaderStream::with_capacity(file, 256 * 1024))
            };
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, content_type(&path))
                .header(header::CACHE_CONTROL, CACHE_SERVE)
                .header(header::CONTENT_LENGTH, len)
                .body(body)
        }
    };
    response.map_err(ServerError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const A: &str = "00000000000000000000000000000000-a";
    const B: &str = "11111111111111111111111111111111-b";

    fn store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        std::fs::create_dir_all(s.join(A).join("sub")).unwrap();
        std::fs::write(s.join(A).join("sub/f.txt"), b"hi").unwrap();
        std::fs::create_dir_all(s.join(B)).unwrap();
        std::fs::write(s.join(B).join("g"), b"g").unwrap();
        symlink("sub/f.txt", s.join(A).join("rel")).unwrap();
        symlink(format!("/nix/store/{B}/g"), s.join(A).join("abs_in")).unwrap();
        symlink("/etc/passwd", s.join(A).join("abs_out")).unwrap();
        symlink("../../../etc/passwd", s.join(A).join("climb")).unwrap();
        symlink(format!("../{B}/g"), s.join(A).join("sibling")).unwrap();
        symlink("loop", s.join(A).join("loop")).unwrap();
        dir
    }

    fn res(dir: &Path, parts: &[&str]) -> ServerResult<Resolved> {
        resolve(
            dir,
            "/nix/store",
            parts.iter().map(|p| p.as_bytes().to_vec()).collect(),
        )
    }

    #[test]
    fn follows_symlinks_inside_the_store_only() {
        let d = store();
        let s = d.path();
        assert_eq!(
            res(s, &[A, "rel"]).unwrap(),
            Resolved::File(s.join(A).join("sub/f.txt"))
        );
        assert_eq!(
            res(s, &[A, "abs_in"]).unwrap(),
            Resolved::File(s.join(B).join("g"))
        );
        assert_eq!(
            res(s, &[A, "sibling"]).unwrap(),
            Resolved::File(s.join(B).join("g"))
        );
        assert_eq!(
            res(s, &[A, "sub"]).unwrap(),
            Resolved::Dir(s.join(A).join("sub"))
        );
        assert!(res(s, &[A, "abs_out"]).is_err());
        assert!(res(s, &[A, "climb"]).is_err());
        assert!(res(s, &[A, "loop"]).is_err());
        assert!(res(s, &[A, "missing"]).is_err());
        assert!(res(s, &[".links"]).is_err());
    }

    #[test]
    fn request_components_refuse_escapes() {
        assert!(request_components("a/../b").is_err());
        assert!(request_components("a/%2e%2e/b").is_err());
        assert!(request_components("a%2fb").is_err());
        assert!(request_components("%00").is_err());
        assert_eq!(
            request_components("a//b%20c/").unwrap(),
            vec![b"a".to_vec(), b"b c".to_vec()]
        );
    }
}
