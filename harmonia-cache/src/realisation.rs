//! Realisations of content-addressed derivation outputs (`.doi` files).

use std::str::FromStr;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use harmonia_store_db::{DrvOutput, Realisation};
use harmonia_store_path::StorePath;
use http::Uri;

use crate::app::{SharedState, blocking, full_response};
use crate::error::{ServerError, ServerResult};
use crate::http_util::CACHE_NARINFO;

/// Nix's realisation JSON (`Realisation::toJSON`): output paths as base names.
fn realisation_json(r: &Realisation) -> serde_json::Value {
    let deps: serde_json::Map<String, serde_json::Value> = r
        .dependent_realisations
        .iter()
        .map(|(id, path)| (id.to_string(), serde_json::Value::String(path.to_string())))
        .collect();
    serde_json::json!({
        "id": r.id.to_string(),
        "outPath": r.out_path.to_string(),
        "signatures": r.signatures,
        "dependentRealisations": deps,
    })
}

/// `GET|HEAD /realisations/<sha256:hash>!<output>.doi` (the URL Nix 2.8 asks for).
pub async fn realisation(State(state): State<SharedState>, uri: Uri) -> ServerResult<Response> {
    let name = uri
        .path()
        .strip_prefix("/realisations/")
        .and_then(|n| n.strip_suffix(".doi"))
        .ok_or(ServerError::NotFound)?;
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .map_err(|_| ServerError::BadRequest("malformed derivation output id\n"))?;
    let id = DrvOutput::from_str(&name)
        .map_err(|_| ServerError::BadRequest("malformed derivation output id\n"))?;
    let st = state.clone();
    let json = blocking(move || {
        let r = st
            .db
            .with_conn(|db| db.query_realisation_by_id(&id))?
            .ok_or(ServerError::NotFound)?;
        serde_json::to_vec(&realisation_json(&r))
            .map_err(|e| ServerError::CorruptMetadata(format!("realisation: {e}")))
    })
    .await?;
    Ok(full_response(
        "application/json",
        CACHE_NARINFO,
        Bytes::from(json),
    ))
}

/// `GET|HEAD /build-trace-v2/<drv>/<output>.doi` (current Nix).
///
/// Nix's database keys realisations by the derivation's hash modulo, not by its path; computing that
/// needs the derivation parsed, which no crate of ours offers yet. Until then every well-formed request
/// is a miss, which Nix handles by building or substituting by path instead.
pub async fn build_trace(uri: Uri) -> ServerResult<Response> {
    let rest = uri
        .path()
        .strip_prefix("/build-trace-v2/")
        .ok_or(ServerError::NotFound)?;
    let (drv, output) = rest.split_once('/').ok_or(ServerError::NotFound)?;
    let output = output.strip_suffix(".doi").ok_or(ServerError::NotFound)?;
    let drv: StorePath = drv
        .parse()
        .map_err(|_| ServerError::BadRequest("malformed derivation path\n"))?;
    if !drv.to_string().ends_with(".drv")
        || output.is_empty()
        || !output
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
    {
        return Err(ServerError::BadRequest("malformed derivation output\n"));
    }
    Err(ServerError::NotFound)
}
