//! Measures QueryAllValidPaths followed by one QueryPathInfo per path (what `nix path-info --all` sends)
//! through harmonia-protocol's client, against any daemon: `path_info_all SOCKET`. Prints paths and seconds.

use std::time::Instant;

use harmonia_protocol::ProtocolVersion;
use harmonia_protocol::client::UnixClient;
use harmonia_store_path::StoreDir;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(socket) = std::env::args().nth(1) else {
        return Err("usage: path_info_all SOCKET".into());
    };
    let mut client = UnixClient::connect(
        socket.as_ref(),
        StoreDir::default(),
        ProtocolVersion::new(1, 34),
    )
    .await?;
    let start = Instant::now();
    let all = client.query_all_valid_paths().await?;
    for p in &all {
        client.query_path_info(p).await?.ok_or("path vanished")?;
    }
    println!("{} {:.6}", all.len(), start.elapsed().as_secs_f64());
    Ok(())
}
