//! Wire primitives: little-endian u64s, padded strings, collections, and the
//! [`NixSerialize`]/[`NixDeserialize`] traits with a version context.
//!
//! Layout (Nix's `serialise.hh`): every integer is a u64 little endian, a bool is an
//! integer (non-zero = true), a string or byte buffer is its u64 length, the bytes and
//! zero padding up to a multiple of 8, a list/set is a u64 count and its items, a map a
//! u64 count and key/value pairs.
//!
//! Writing is synchronous into an in-memory [`Encoder`] (responses are small; NAR data is
//! streamed separately), reading is asynchronous from any `AsyncRead` and bounded: a
//! length field never makes us allocate more than what really arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use harmonia_store_path::StoreDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{ProtocolError, Result};
use crate::version::ProtocolVersion;

/// Default cap for a text string whose field has no tighter limit (1 MiB).
pub const MAX_STRING: u64 = 1 << 20;
/// Cap for short text such as store path names, hashes, settings names (64 KiB).
pub const MAX_SHORT_STRING: u64 = 64 << 10;
/// Cap for a big in-band blob such as the text of `AddTextToStore` (256 MiB).
pub const MAX_BLOB: u64 = 256 << 20;
/// Cap on the number of items in a list, set or map (16 Mi items).
pub const MAX_ITEMS: u64 = 1 << 24;
/// Chunk by which buffers grow while reading, so allocation follows the data.
const READ_CHUNK: u64 = 64 << 10;

/// Zero bytes needed after `len` bytes to reach a multiple of 8.
pub const fn padding_len(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

/// The reading half: an async source plus the negotiated version and the store dir.
#[derive(Debug)]
pub struct NixReader<R> {
    inner: R,
    version: ProtocolVersion,
    store_dir: StoreDir,
}

impl<R> NixReader<R> {
    /// Wraps `inner` (pass a `BufReader` for sockets) at `version` for `store_dir`.
    pub fn new(inner: R, version: ProtocolVersion, store_dir: StoreDir) -> Self {
        Self {
            inner,
            version,
            store_dir,
        }
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Changes the version (after the handshake, or for nested fixed-version data).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// The logical store dir store paths are parsed against.
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// The wrapped source, e.g. to stream raw NAR data after a request.
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Gives back the wrapped source.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin + Send> NixReader<R> {
    /// Reads one u64, little endian.
    pub async fn read_u64(&mut self) -> Result<u64> {
        Ok(self.inner.read_u64_le().await?)
    }

    /// Reads one u64, or `None` when the stream ends cleanly before its first byte
    /// (how a peer closes a connection between requests).
    pub async fn try_read_u64(&mut self) -> Result<Option<u64>> {
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            let n = self.inner.read(&mut buf[got..]).await?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            got += n;
        }
        Ok(Some(u64::from_le_bytes(buf)))
    }

    /// Reads a bool (an integer, non-zero meaning true, as Nix reads it).
    pub async fn read_bool(&mut self) -> Result<bool> {
        Ok(self.read_u64().await? != 0)
    }

    /// Reads a length-prefixed, padded byte buffer of at most `max` bytes.
    pub async fn read_bytes(&mut self, what: &'static str, max: u64) -> Result<Vec<u8>> {
        let len = self.read_u64().await?;
        if len > max {
            return Err(ProtocolError::TooLong { what, len, max });
        }
        let mut buf = Vec::with_capacity(len.min(READ_CHUNK) as usize);
        // `take` + `read_to_end` grows the buffer only as data really arrives.
        (&mut self.inner).take(len).read_to_end(&mut buf).await?;
        if (buf.len() as u64) < len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        self.read_padding(len).await?;
        Ok(buf)
    }

    /// Reads the zero padding that follows `len` bytes of string data.
    pub async fn read_padding(&mut self, len: u64) -> Result<()> {
        let pad = padding_len(len);
        if pad > 0 {
            let mut zero = [0u8; 8];
            self.inner.read_exact(&mut zero[..pad]).await?;
            if zero[..pad].iter().any(|b| *b != 0) {
                return Err(ProtocolError::NonZeroPadding);
            }
        }
        Ok(())
    }

    /// Reads a UTF-8 string of at most `max` bytes.
    pub async fn read_string(&mut self, what: &'static str, max: u64) -> Result<String> {
        let bytes = self.read_bytes(what, max).await?;
        String::from_utf8(bytes).map_err(|_| ProtocolError::InvalidUtf8 { what })
    }

    /// Reads a list count, checked against [`MAX_ITEMS`].
    pub async fn read_count(&mut self, what: &'static str) -> Result<usize> {
        let len = self.read_u64().await?;
        if len > MAX_ITEMS {
            return Err(ProtocolError::TooLong {
                what,
                len,
                max: MAX_ITEMS,
            });
        }
        Ok(len as usize)
    }

    /// Reads any [`NixDeserialize`] value.
    pub async fn read<T: NixDeserialize>(&mut self) -> Result<T> {
        T::deserialize(self).await
    }

    /// Reads a value that is sent as a validity flag followed, if set, by the value (the shape of
    /// QueryPathInfo's and QuerySubstitutablePathInfo's replies).
    pub async fn read_flagged<T: NixDeserialize>(&mut self) -> Result<Option<T>> {
        if self.read_bool().await? {
            Ok(Some(self.read().await?))
        } else {
            Ok(None)
        }
    }
}

/// The writing buffer: messages are encoded here synchronously, then flushed.
#[derive(Debug, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
    version: ProtocolVersion,
    store_dir: StoreDir,
}

impl Encoder {
    /// An empty encoder at `version` for `store_dir`.
    pub fn new(version: ProtocolVersion, store_dir: StoreDir) -> Self {
        Self {
            buf: Vec::new(),
            version,
            store_dir,
        }
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Changes the version (after the handshake, or for nested fixed-version data).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// The logical store dir store paths are rendered with.
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// The bytes encoded so far.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the bytes encoded so far, leaving the encoder empty.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Writes a u64, little endian.
    pub fn write_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Writes a bool as 0 or 1.
    pub fn write_bool(&mut self, v: bool) {
        self.write_u64(u64::from(v));
    }

    /// Writes a length-prefixed, zero-padded byte buffer.
    pub fn write_bytes(&mut self, data: &[u8]) {
        self.write_u64(data.len() as u64);
        self.buf.extend_from_slice(data);
        self.buf
            .extend_from_slice(&[0u8; 8][..padding_len(data.len() as u64)]);
    }

    /// Writes a string (same layout as bytes).
    pub fn write_str(&mut self, s: &str) {
        self.write_bytes(s.as_bytes());
    }

    /// Appends raw bytes with no length or padding (frames, NAR data).
    pub fn write_raw(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Writes any [`NixSerialize`] value.
    pub fn write<T: NixSerialize + ?Sized>(&mut self, v: &T) {
        v.serialize(self);
    }

    /// Writes a validity flag followed, if set, by the value (see [`NixReader::read_flagged`]).
    pub fn write_flagged<T: NixSerialize>(&mut self, v: &Option<T>) {
        self.write_bool(v.is_some());
        if let Some(v) = v {
            self.write(v);
        }
    }
}

/// The writing half: an [`Encoder`] plus the sink it is flushed to.
#[derive(Debug)]
pub struct NixWriter<W> {
    enc: Encoder,
    inner: W,
}

impl<W> NixWriter<W> {
    /// Wraps `inner` at `version` for `store_dir`.
    pub fn new(inner: W, version: ProtocolVersion, store_dir: StoreDir) -> Self {
        Self {
            enc: Encoder::new(version, store_dir),
            inner,
        }
    }

    /// The wrapped sink (flush first if anything is buffered).
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Gives back the wrapped sink, dropping anything not flushed.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: AsyncWrite + Unpin + Send> NixWriter<W> {
    /// Sends everything buffered and flushes the sink.
    pub async fn flush(&mut self) -> Result<()> {
        if !self.enc.buf.is_empty() {
            self.inner.write_all(&self.enc.buf).await?;
            self.enc.buf.clear();
        }
        self.inner.flush().await?;
        Ok(())
    }

    /// Sends what is buffered, then `data` as is (for streaming NARs without copying).
    pub async fn write_raw_now(&mut self, data: &[u8]) -> Result<()> {
        if !self.enc.buf.is_empty() {
            self.inner.write_all(&self.enc.buf).await?;
            self.enc.buf.clear();
        }
        self.inner.write_all(data).await?;
        Ok(())
    }
}

impl<W> std::ops::Deref for NixWriter<W> {
    type Target = Encoder;
    fn deref(&self) -> &Encoder {
        &self.enc
    }
}

impl<W> std::ops::DerefMut for NixWriter<W> {
    fn deref_mut(&mut self) -> &mut Encoder {
        &mut self.enc
    }
}

/// A value with a worker-protocol encoding (possibly depending on the version).
pub trait NixSerialize {
    /// Appends the wire form of `self` to `enc`.
    fn serialize(&self, enc: &mut Encoder);
}

/// A value that can be read from the worker protocol (possibly depending on the version).
pub trait NixDeserialize: Sized + Send {
    /// Reads one value from `r`.
    fn deserialize<R: AsyncRead + Unpin + Send>(
        r: &mut NixReader<R>,
    ) -> impl Future<Output = Result<Self>> + Send;
}

impl<T: NixSerialize + ?Sized> NixSerialize for Box<T> {
    fn serialize(&self, enc: &mut Encoder) {
        (**self).serialize(enc);
    }
}

impl<T: NixDeserialize> NixDeserialize for Box<T> {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        Ok(Box::new(T::deserialize(r).await?))
    }
}

impl NixSerialize for u64 {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_u64(*self);
    }
}

impl NixDeserialize for u64 {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        r.read_u64().await
    }
}

impl NixSerialize for bool {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_bool(*self);
    }
}

impl NixDeserialize for bool {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        r.read_bool().await
    }
}

impl NixSerialize for str {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_str(self);
    }
}

impl NixSerialize for String {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_str(self);
    }
}

/// Strings default to the [`MAX_STRING`] cap; fields that need more read by hand.
impl NixDeserialize for String {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        r.read_string("string", MAX_STRING).await
    }
}

impl<T: NixSerialize> NixSerialize for Vec<T> {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_u64(self.len() as u64);
        for item in self {
            item.serialize(enc);
        }
    }
}

impl<T: NixDeserialize> NixDeserialize for Vec<T> {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let n = r.read_count("list").await?;
        // Each item takes at least 8 bytes on the wire, so cap the preallocation.
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            out.push(T::deserialize(r).await?);
        }
        Ok(out)
    }
}

impl<T: NixSerialize> NixSerialize for BTreeSet<T> {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_u64(self.len() as u64);
        for item in self {
            item.serialize(enc);
        }
    }
}

impl<T: NixDeserialize + Ord> NixDeserialize for BTreeSet<T> {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let n = r.read_count("set").await?;
        let mut out = BTreeSet::new();
        for _ in 0..n {
            out.insert(T::deserialize(r).await?);
        }
        Ok(out)
    }
}

impl<K: NixSerialize, V: NixSerialize> NixSerialize for BTreeMap<K, V> {
    fn serialize(&self, enc: &mut Encoder) {
        enc.write_u64(self.len() as u64);
        for (k, v) in self {
            k.serialize(enc);
            v.serialize(enc);
        }
    }
}

impl<K: NixDeserialize + Ord, V: NixDeserialize> NixDeserialize for BTreeMap<K, V> {
    async fn deserialize<R: AsyncRead + Unpin + Send>(r: &mut NixReader<R>) -> Result<Self> {
        let n = r.read_count("map").await?;
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let k = K::deserialize(r).await?;
            let v = V::deserialize(r).await?;
            out.insert(k, v);
        }
        Ok(out)
    }
}

macro_rules! tuple_impls {
    ($($name:ident),+) => {
        impl<$($name: NixSerialize),+> NixSerialize for ($($name,)+) {
            #[allow(non_snake_case)]
            fn serialize(&self, enc: &mut Encoder) {
                let ($($name,)+) = self;
                $($name.serialize(enc);)+
            }
        }
        impl<$($name: NixDeserialize),+> NixDeserialize for ($($name,)+) {
            #[allow(non_snake_case)]
            async fn deserialize<RR: AsyncRead + Unpin + Send>(r: &mut NixReader<RR>) -> Result<Self> {
                $(let $name = $name::deserialize(r).await?;)+
                Ok(($($name,)+))
            }
        }
    };
}
tuple_impls!(A, B);
tuple_impls!(A, B, C);

/// Declares a struct whose wire form is its fields in order, with fields gated on a
/// minimum protocol version (`@since(1, 25)`): below it they are neither written nor
/// read and take their `Default` value.
///
/// ```ignore
/// nix_struct! {
///     /// Doc.
///     #[derive(Debug, Clone, PartialEq, Eq)]
///     pub struct QueryValidPaths {
///         /// Paths to check.
///         pub paths: BTreeSet<StorePath>,
///         /// Substitute missing paths first.
///         @since(1, 27) pub substitute: bool,
///     }
/// }
/// ```
#[macro_export]
macro_rules! nix_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $(@since($maj:literal, $min:literal))?
                $fvis:vis $field:ident : $fty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $fty, )*
        }

        impl $crate::wire::NixSerialize for $name {
            #[allow(unused_variables)]
            fn serialize(&self, enc: &mut $crate::wire::Encoder) {
                $(
                    if $crate::nix_struct!(@gate enc.version() $(, $maj, $min)?) {
                        $crate::wire::NixSerialize::serialize(&self.$field, enc);
                    }
                )*
            }
        }

        impl $crate::wire::NixDeserialize for $name {
            #[allow(unused_variables)]
            async fn deserialize<R: $crate::__tokio::io::AsyncRead + ::std::marker::Unpin + ::std::marker::Send>(
                r: &mut $crate::wire::NixReader<R>,
            ) -> $crate::error::Result<Self> {
                $(
                    let $field: $fty = $crate::nix_struct!(@read r, $fty $(, $maj, $min)?);
                )*
                Ok(Self { $($field,)* })
            }
        }
    };
    (@gate $v:expr) => { true };
    (@gate $v:expr, $maj:literal, $min:literal) => {
        $v >= $crate::version::ProtocolVersion::new($maj, $min)
    };
    (@read $r:ident, $fty:ty) => {
        <$fty as $crate::wire::NixDeserialize>::deserialize($r).await?
    };
    (@read $r:ident, $fty:ty, $maj:literal, $min:literal) => {
        if $r.version() >= $crate::version::ProtocolVersion::new($maj, $min) {
            <$fty as $crate::wire::NixDeserialize>::deserialize($r).await?
        } else {
            <$fty as ::std::default::Default>::default()
        }
    };
}
