//! The session book: every live session in memory, all rules, no I/O, time passed in.

use std::collections::HashMap;

use crate::crypto::secret::{self, Digest32};
use crate::store::session::SessionRecord;
use crate::time::Millis;

/// A session as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub user_id: String,
    pub username: String,
    pub csrf_token: String,
    /// When the person signed in (OpenID Connect `auth_time`).
    pub signed_in_at_ms: Millis,
}

/// A freshly created session: the id goes into the cookie, and nowhere else.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf_token: String,
}

#[derive(Default)]
pub struct SessionBook {
    sessions: HashMap<Digest32, SessionRecord>,
    /// Sessions ended (here or, on a shared database, elsewhere) since the last sweep: a
    /// session never comes back, so a read or reload that started before the end cannot
    /// bring it back either.
    ended: std::collections::HashSet<Digest32>,
}

/// Most ended sessions remembered between sweeps.
const MAX_ENDED: usize = 100_000;

impl SessionBook {
    pub fn load(records: Vec<(Digest32, SessionRecord)>) -> Self {
        Self {
            sessions: records.into_iter().collect(),
            ended: Default::default(),
        }
    }

    /// Everything a shared store held at a reload, but the sessions ended since.
    pub fn reload(&mut self, records: Vec<(Digest32, SessionRecord)>) {
        self.sessions = records.into_iter().filter(|(k, _)| !self.ended.contains(k)).collect();
    }

    fn end(&mut self, key: Digest32) {
        self.sessions.remove(&key);
        if self.ended.len() >= MAX_ENDED {
            self.ended.clear();
        }
        self.ended.insert(key);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A new session for `user_id`, living `max_age_ms` from `now`: its key and record (to
    /// store) and what the browser gets.
    pub fn create(&mut self, user_id: String, username: String, now: Millis, max_age_ms: Millis) -> (Digest32, SessionRecord, NewSession) {
        let id = secret::random_token(32);
        let key = secret::sha256(&id);
        let rec = SessionRecord {
            user_id,
            username,
            csrf_token: secret::random_token(32),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(max_age_ms),
        };
        let new = NewSession {
            id,
            csrf_token: rec.csrf_token.clone(),
        };
        self.sessions.insert(key, rec.clone());
        (key, rec, new)
    }

    /// Whether the session stored under `key` is held.
    pub fn holds(&self, key: &Digest32) -> bool {
        self.sessions.contains_key(key)
    }

    /// A session as a shared store had it when read (`None`: ended elsewhere). An ended
    /// session stays ended.
    pub fn stored(&mut self, key: Digest32, rec: Option<SessionRecord>) {
        match rec {
            Some(rec) if !self.ended.contains(&key) => {
                self.sessions.insert(key, rec);
            }
            Some(_) => {}
            None => self.end(key),
        }
    }

    /// The live session behind a cookie's id.
    pub fn get(&self, id: &str, now: Millis) -> Option<SessionView> {
        self.sessions
            .get(&secret::sha256(id))
            .filter(|r| r.expires_at_ms > now)
            .map(|r| SessionView {
                user_id: r.user_id.clone(),
                username: r.username.clone(),
                csrf_token: r.csrf_token.clone(),
                signed_in_at_ms: r.created_at_ms,
            })
    }

    /// Ends the session behind `id`; its key, if there was one.
    pub fn destroy(&mut self, id: &str) -> Option<Digest32> {
        let key = secret::sha256(id);
        let held = self.sessions.contains_key(&key);
        self.end(key);
        held.then_some(key)
    }

    /// Ends every session of `user_id` except the one behind `keep`; their keys.
    pub fn destroy_for_user(&mut self, user_id: &str, keep: Option<&str>) -> Vec<Digest32> {
        let keep = keep.map(secret::sha256);
        self.remove_where(|k, r| r.user_id == user_id && Some(*k) != keep)
    }

    /// Removes the sessions expired at `now`; their keys.
    pub fn sweep(&mut self, now: Millis) -> Vec<Digest32> {
        self.ended.clear();
        let gone: Vec<Digest32> = self
            .sessions
            .iter()
            .filter(|(_, r)| r.expires_at_ms <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.sessions.remove(k);
        }
        gone
    }

    fn remove_where(&mut self, f: impl Fn(&Digest32, &SessionRecord) -> bool) -> Vec<Digest32> {
        let gone: Vec<Digest32> = self.sessions.iter().filter(|(k, r)| f(k, r)).map(|(k, _)| *k).collect();
        for k in &gone {
            self.end(*k);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_000_000;

    #[test]
    fn a_session_lives_until_its_expiry_and_not_a_millisecond_longer() {
        let mut b = SessionBook::default();
        let (_, _, s) = b.create("u1".into(), "alice".into(), T0, 1_000);
        assert_eq!(b.get(&s.id, T0 + 999).map(|v| v.username), Some("alice".into()));
        assert_eq!(b.get(&s.id, T0 + 1_000), None);
        assert_eq!(b.get("not-a-session", T0), None);
        assert_eq!(b.sweep(T0 + 999).len(), 0);
        assert_eq!(b.sweep(T0 + 1_000).len(), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn ending_a_users_sessions_keeps_the_current_one_and_touches_no_one_else() {
        let mut b = SessionBook::default();
        let (_, _, current) = b.create("u1".into(), "alice".into(), T0, 60_000);
        let (_, _, other) = b.create("u1".into(), "alice".into(), T0, 60_000);
        let (_, _, bob) = b.create("u2".into(), "bob".into(), T0, 60_000);
        assert_eq!(b.destroy_for_user("u1", Some(&current.id)).len(), 1);
        assert!(b.get(&current.id, T0).is_some());
        assert!(b.get(&other.id, T0).is_none());
        assert!(b.get(&bob.id, T0).is_some());
        assert!(b.destroy(&bob.id).is_some());
        assert!(b.destroy(&bob.id).is_none(), "a second sign-out finds nothing");
    }
}
