//! What other processes changed: the feed a shared database gives its owners, so that each
//! actor's in-memory state stays a faithful cache of the database.
//!
//! A backend shared by several processes announces every committed change that another
//! process's answers depend on (a decision, a revocation, a sign-out, a user disabled); the
//! supervisor hands each [`Change`] to its owner, which reads the changed record again. While
//! the feed is down ([`FeedEvent::Lost`]) owners cannot trust their caches and read through to
//! the database; when it is back ([`FeedEvent::Resync`]) they reload. The embedded backend has
//! one process and no feed.

use super::device::DeviceKey;
use super::session::SessionKey;

/// A record another process changed, named by its owner's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A device authorization was decided or removed.
    Device(DeviceKey),
    /// Tokens of this authorization were issued, refreshed or revoked.
    Authorization(String),
    /// A browser session ended.
    Session(SessionKey),
    /// A user was created, changed or deleted.
    User(String),
    /// A client was created, changed or deleted.
    Client(String),
}

/// What the feed says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    Changed(Change),
    /// The feed is down: changes may be missed, so caches are not to be trusted.
    Lost,
    /// The feed is back: reload what may have been missed, then trust the cache again.
    Resync,
}

/// How far an owner may trust its memory of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cache {
    /// Other processes share the database: what is not in memory may still exist.
    pub shared: bool,
    /// The change feed is up: what is in memory is current (within the feed's delay).
    pub trusted: bool,
}

impl Cache {
    /// One process owns the database: memory is the whole truth.
    pub const ALONE: Cache = Cache {
        shared: false,
        trusted: true,
    };

    /// Whether an answer must be read from the database first: memory missed (`hit` false)
    /// on a shared database, or the feed is down.
    pub fn read_through(&self, hit: bool) -> bool {
        self.shared && (!hit || !self.trusted)
    }
}

impl Change {
    /// The wire form: a one-letter kind, then the key (hex for digests).
    pub fn encode(&self) -> String {
        match self {
            Change::Device(k) => format!("d{}", hex::encode(k)),
            Change::Authorization(id) => format!("a{id}"),
            Change::Session(k) => format!("s{}", hex::encode(k)),
            Change::User(id) => format!("u{id}"),
            Change::Client(id) => format!("c{id}"),
        }
    }

    pub fn decode(s: &str) -> Option<Change> {
        let digest = |h: &str| hex::decode(h).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
        let (kind, key) = (s.get(..1)?, s.get(1..)?);
        Some(match kind {
            "d" => Change::Device(digest(key)?),
            "a" => Change::Authorization(key.to_owned()),
            "s" => Change::Session(digest(key)?),
            "u" => Change::User(key.to_owned()),
            "c" => Change::Client(key.to_owned()),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn changes_survive_the_wire() {
        for c in [
            Change::Device([7; 32]),
            Change::Authorization("a-1:x".into()),
            Change::Session([1; 32]),
            Change::User("u".into()),
            Change::Client("c".into()),
        ] {
            assert_eq!(Change::decode(&c.encode()), Some(c));
        }
        assert_eq!(Change::decode("dzz"), None);
        assert_eq!(Change::decode(""), None);
        assert_eq!(Change::decode("x1"), None);
    }
}
