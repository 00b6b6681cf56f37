//! Who is on the other end of a connection, and whether Nix's `trusted-users`/`allowed-users` rules let them in.

use nix::unistd::{Gid, Group, Uid, User};

/// The peer of a unix-socket connection, from `SO_PEERCRED`.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer's user id.
    pub uid: u32,
    /// The peer's user name, or the uid in decimal when the user has no passwd entry (as Nix does).
    pub user: String,
    /// The peer's primary group name, or the gid in decimal.
    pub group: String,
    /// The peer's process id, when the kernel reports it.
    pub pid: Option<i32>,
}

impl Peer {
    /// Resolves names for the credentials; blocking (NSS), so call it off the async workers.
    pub fn resolve(uid: u32, gid: u32, pid: Option<i32>) -> Peer {
        let user = match User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(u)) => u.name,
            _ => uid.to_string(),
        };
        let group = match Group::from_gid(Gid::from_raw(gid)) {
            Ok(Some(g)) => g.name,
            _ => gid.to_string(),
        };
        Peer {
            uid,
            user,
            group,
            pid,
        }
    }
}

/// Nix's `matchUser`: `*` matches everyone, a bare name matches that user, `@g` matches members of group `g`
/// (by the group's member list or by the peer's primary group). Blocking (NSS lookups).
pub fn matches(peer: &Peer, entries: &[String]) -> bool {
    entries.iter().any(|e| {
        if e == "*" || *e == peer.user {
            return true;
        }
        let Some(group) = e.strip_prefix('@') else {
            return false;
        };
        if group == peer.group {
            return true;
        }
        match Group::from_name(group) {
            Ok(Some(g)) => g.mem.contains(&peer.user),
            _ => false,
        }
    })
}

/// What a connection is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A trusted user: may skip signature checks, as Nix's `trusted-users`.
    Trusted,
    /// An allowed but untrusted user.
    Allowed,
    /// Not allowed to connect.
    Denied,
}

/// Decides access for `peer`; trusted users are always allowed, as in Nix.
pub fn access(peer: &Peer, trusted: &[String], allowed: &[String]) -> Access {
    if matches(peer, trusted) {
        Access::Trusted
    } else if matches(peer, allowed) {
        Access::Allowed
    } else {
        Access::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(user: &str, group: &str) -> Peer {
        Peer {
            uid: 1234,
            user: user.into(),
            group: group.into(),
            pid: None,
        }
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nix_defaults() {
        let (t, a) = (list(&["root"]), list(&["*"]));
        assert_eq!(access(&peer("root", "root"), &t, &a), Access::Trusted);
        assert_eq!(access(&peer("alice", "users"), &t, &a), Access::Allowed);
    }

    #[test]
    fn groups_and_denial() {
        let t = list(&["@wheel"]);
        let a = list(&["bob", "@users"]);
        assert_eq!(access(&peer("alice", "wheel"), &t, &a), Access::Trusted);
        assert_eq!(access(&peer("bob", "staff"), &t, &a), Access::Allowed);
        assert_eq!(access(&peer("carol", "users"), &t, &a), Access::Allowed);
        assert_eq!(
            access(&peer("mallory", "nogroup-xyz"), &t, &a),
            Access::Denied
        );
    }

    #[test]
    fn resolves_root() {
        let p = Peer::resolve(0, 0, None);
        assert_eq!(p.user, "root");
        let p = Peer::resolve(4_000_000_000, 4_000_000_000, None);
        assert_eq!(p.user, "4000000000");
    }
}
