use digest::Digest as _;

use crate::{Algorithm, Hash};

enum State {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// A streaming hasher for any [`Algorithm`] (Nix's `HashSink`); also counts the bytes it has seen.
///
/// Implements [`std::io::Write`], and `tokio::io::AsyncWrite` with the cargo feature `tokio`, so a NAR can be
/// hashed while it streams.
pub struct Hasher {
    state: State,
    len: u64,
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algo: Algorithm) -> Hasher {
        let state = match algo {
            Algorithm::Md5 => State::Md5(md5::Md5::new()),
            Algorithm::Sha1 => State::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
        };
        Hasher { state, len: 0 }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            State::Md5(_) => Algorithm::Md5,
            State::Sha1(_) => Algorithm::Sha1,
            State::Sha256(_) => Algorithm::Sha256,
            State::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds more data.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Md5(h) => h.update(data),
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
            State::Sha512(h) => h.update(data),
        }
        self.len += data.len() as u64;
    }

    /// Number of bytes fed so far (the NAR size, when hashing a NAR).
    pub fn bytes_hashed(&self) -> u64 {
        self.len
    }

    /// The hash of everything fed.
    pub fn finish(self) -> Hash {
        // Each digest crate produces exactly the length `Algorithm::digest_len` names.
        match self.state {
            State::Md5(h) => Hash::from_trusted_digest(Algorithm::Md5, &h.finalize()),
            State::Sha1(h) => Hash::from_trusted_digest(Algorithm::Sha1, &h.finalize()),
            State::Sha256(h) => Hash::from_trusted_digest(Algorithm::Sha256, &h.finalize()),
            State::Sha512(h) => Hash::from_trusted_digest(Algorithm::Sha512, &h.finalize()),
        }
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("algorithm", &self.algorithm())
            .field("bytes_hashed", &self.len)
            .finish()
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncWrite for Hasher {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.get_mut().update(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn known_digests_of_abc() {
        // Standard test vectors (FIPS 180 / RFC 1321) for "abc".
        let cases = [
            (Algorithm::Md5, "900150983cd24fb0d6963f7d28e17f72"),
            (Algorithm::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                Algorithm::Sha256,
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                Algorithm::Sha512,
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
        ];
        for (algo, hex) in cases {
            assert_eq!(Hash::digest_of(algo, b"abc").to_base16(), hex, "{algo}");
        }
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for algo in Algorithm::ALL {
            let mut h = Hasher::new(algo);
            for chunk in data.chunks(333) {
                h.write_all(chunk).unwrap();
            }
            assert_eq!(h.bytes_hashed(), data.len() as u64);
            assert_eq!(h.algorithm(), algo);
            assert_eq!(h.finish(), Hash::digest_of(algo, &data));
        }
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn async_write_equals_one_shot() {
        use tokio::io::AsyncWriteExt;
        let data = vec![42u8; 100_000];
        let mut h = Hasher::new(Algorithm::Sha256);
        AsyncWriteExt::write_all(&mut h, &data).await.unwrap();
        AsyncWriteExt::shutdown(&mut h).await.unwrap();
        assert_eq!(h.finish(), Hash::digest_of(Algorithm::Sha256, &data));
    }
}
