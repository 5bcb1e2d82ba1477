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

    fn remove_for_user(&self, user_id: &str, keep: Option<SessionKey>) -> Pending<usize> {
        let (engine, user_id) = (self.0.clone(), user_id.to_owned());
        Box::pin(async move {
            // One process writes this file, so nothing starts a session between the two steps
            // that the owner's book does not already know of.
            let keys = engine
                .read(move |r| {
                    let mut keys = Vec::new();
                    r.scan(Table::Sessions, |k, v| {
                        if let (Ok(key), Ok(rec)) = (SessionKey::try_from(k), decode::<SessionRecord>(v))
                            && rec.user_id == user_id
                            && Some(key) != keep
                        {
                            keys.push(key);
                        }
                        Ok(())
                    })?;
                    Ok(keys)
                })
                .await?;
            let n = keys.len();
            engine
                .submit(keys.iter().map(|k| Op::delete(Table::Sessions, k.to_vec())).collect())
                .await?;
            Ok(n)
        })
    }

    fn prune(&self, now: Millis) -> Pending<()> {
        let load = self.load(now);
        Box::pin(async move { load.await.map(|_| ()) })
    }

    fn get(&self, key: SessionKey) -> Pending<Option<SessionRecord>> {
        self.0
            .read(move |r| r.get(Table::Sessions, &key[..])?.map(|v| decode(&v)).transpose())
    }

    fn remove(&self, keys: &[SessionKey]) -> Pending<()> {
        self.0
            .submit(keys.iter().map(|k| Op::delete(Table::Sessions, k.to_vec())).collect())
    }
}
