//! Protocol versions (`major << 8 | minor` on the wire) and the range this crate speaks.

use std::fmt;

/// A worker protocol version, as Nix's `PROTOCOL_VERSION` (`major << 8 | minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    major: u8,
    minor: u8,
}

impl ProtocolVersion {
    /// Builds a version from its parts.
    pub const fn new(major: u8, minor: u8) -> Self {
        Self { major, minor }
    }

    /// The major part (always 1 for today's protocol).
    pub const fn major(self) -> u8 {
        self.major
    }

    /// The minor part.
    pub const fn minor(self) -> u8 {
        self.minor
    }

    /// Decodes the wire form `major << 8 | minor` (higher bits are ignored, as Nix does).
    pub const fn from_wire(v: u64) -> Self {
        Self {
            major: ((v >> 8) & 0xff) as u8,
            minor: (v & 0xff) as u8,
        }
    }

    /// Encodes to the wire form `major << 8 | minor`.
    pub const fn to_wire(self) -> u64 {
        ((self.major as u64) << 8) | self.minor as u64
    }

    /// Whether this crate can speak this version (1.21 ..= 1.38).
    pub fn is_supported(self) -> bool {
        (MIN_VERSION..=PROTOCOL_VERSION).contains(&self)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The newest version this crate speaks and advertises (Nix 2.24+ speaks 1.37, 2.25+ 1.38).
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::new(1, 38);

/// The oldest version this crate accepts (Nix 2.3 speaks 1.21).
pub const MIN_VERSION: ProtocolVersion = ProtocolVersion::new(1, 21);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_order() {
        assert_eq!(PROTOCOL_VERSION.to_wire(), 0x126);
        assert_eq!(
            ProtocolVersion::from_wire(0x115),
            ProtocolVersion::new(1, 21)
        );
        assert!(ProtocolVersion::new(1, 21) < ProtocolVersion::new(1, 38));
        assert!(ProtocolVersion::new(2, 0) > ProtocolVersion::new(1, 38));
        assert!(!ProtocolVersion::new(1, 20).is_supported());
        assert!(ProtocolVersion::new(1, 34).is_supported());
        assert!(!ProtocolVersion::new(1, 39).is_supported());
        assert_eq!(ProtocolVersion::new(1, 35).to_string(), "1.35");
    }
}
