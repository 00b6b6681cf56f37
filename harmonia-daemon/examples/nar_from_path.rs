//! Measures NarFromPath through harmonia-protocol's client: `nar_from_path SOCKET STORE_PATH`.
//! Prints the NAR size and the time it took (used by `scripts/bench-daemon`).

use std::time::Instant;

use harmonia_protocol::ProtocolVersion;
use harmonia_protocol::client::Client;
use harmonia_protocol::handshake::ClientHandshake;
use harmonia_store_path::StoreDir;
use tokio::io::BufReader;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(path)) = (args.next(), args.next()) else {
        return Err("usage: nar_from_path SOCKET STORE_PATH".into());
    };
    let sd = StoreDir::default();
    let path = sd.parse_path(&path)?;
    // A large read buffer: NARs arrive in big chunks, and an 8 KiB buffer costs a syscall per 8 KiB.
    let stream = tokio::net::UnixStream::connect(&socket).await?;
    let (r, w) = stream.into_split();
    let offer = ClientHandshake {
        version: ProtocolVersion::new(1, 38),
        ..ClientHandshake::default()
    };
    let mut client = Client::handshake(BufReader::with_capacity(1 << 20, r), w, sd, &offer).await?;
    let start = Instant::now();
    let size = client.nar_from_path(&path, &mut tokio::io::sink()).await?;
    let secs = start.elapsed().as_secs_f64();
    println!("{size} {secs:.6}");
    Ok(())
}
