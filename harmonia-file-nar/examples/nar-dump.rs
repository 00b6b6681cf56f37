//! `nar-dump PATH`: write the NAR of PATH to stdout, like `nix-store --dump PATH` (used by scripts/bench-nar).
//!
//! `nar-dump --async PATH` goes through the async stream instead of the synchronous encoder;
//! `nar-dump --hash PATH` prints the NAR hash and size instead; `nar-dump --restore DEST < NAR` unpacks.

use std::io::Write;
use std::os::fd::AsFd;

use futures::StreamExt;
use harmonia_file_nar::{NarEncoder, encode};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let use_async = args.first().is_some_and(|a| a == "--async");
    if use_async {
        args.remove(0);
    }
    if args.first().is_some_and(|a| a == "--restore") {
        let [_, dest] = args.as_slice() else {
            anyhow::bail!("usage: nar-dump --restore DEST < NAR");
        };
        let rt = tokio::runtime::Builder::new_multi_thread().build()?;
        let stdin = tokio::io::BufReader::with_capacity(1 << 20, tokio::io::stdin());
        rt.block_on(harmonia_file_nar::restore(stdin, dest.as_ref()))?;
        return Ok(());
    }
    let hash = args.first().is_some_and(|a| a == "--hash");
    if hash {
        args.remove(0);
    }
    // Undocumented knob for tuning experiments: NAR_DUMP_CHUNK=bytes (sync encoder only).
    let chunk = std::env::var("NAR_DUMP_CHUNK")
        .ok()
        .and_then(|c| c.parse().ok());
    let [path] = args.as_slice() else {
        anyhow::bail!("usage: nar-dump [--async | --hash] PATH");
    };
    if hash {
        let (hash, size) = harmonia_file_nar::hash_and_size_blocking(path.as_ref())?;
        println!("{hash} {size}");
        return Ok(());
    }
    // Write to fd 1 directly: stdout's LineWriter would scan every chunk for newlines.
    let mut out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    if use_async {
        let rt = tokio::runtime::Builder::new_multi_thread().build()?;
        rt.block_on(async {
            let mut stream = encode(path.into());
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?)?;
            }
            anyhow::Ok(())
        })?;
    } else {
        let encoder = match chunk {
            Some(size) => NarEncoder::with_chunk_size(path.into(), 0, size),
            None => NarEncoder::new(path),
        };
        encoder.write_to(&mut out)?;
    }
    out.flush()?;
    Ok(())
}
