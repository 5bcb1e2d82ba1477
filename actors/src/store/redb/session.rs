//! [`SessionRepo`] on redb: `sessions`, SHA-256(session id) → JSON record.

use super::engine::{Engine, Op, Table, decode};
use crate::store::port::Pending;
use crate::store::session::{SessionKey, SessionRecord, SessionRepo};
use crate::time::Millis;

pub(super) struct Sessions(pub Engine);

impl SessionRepo for Sessions {
    fn load(&self, now: Millis) -> Pending<Vec<(SessionKey, SessionRecord)>> {
        self.0
            .load_live(Table::Sessions, move |rec: &SessionRecord| rec.expires_at_ms > now)
    }

    fn insert(&self, key: SessionKey, record: &SessionRecord) -> Pending<()> {
        self.0.submit_encoded(|| Ok(vec![Op::put(Table::Sessions, key.to_vec(), record)?]))
    }

    fn get(&self, key: SessionKey) -> Pending<Option<SessionRecord>> {
        self.0.read(move |r| r.get(Table::Sessions, &key[..])?.map(|v| decode(&v)).transpose())
    }

    fn remove(&self, keys: &[SessionKey]) -> Pending<()> {
        self.0
            .submit(keys.iter().map(|k| Op::delete(Table::Sessions, k.to_vec())).collect())
    }
}
