//! [`DirectoryRepo`] on redb: `users` (id → JSON), `clients` (client id → JSON), and the seed
//! mark in `meta`.

use super::engine::{Engine, Guard, Op, Table, decode};
use crate::store::directory::{ClientRecord, DirectoryData, DirectoryRepo, UserRecord};
use crate::store::port::Pending;

const SEED_MARK: &[u8] = b"seeded";

pub(super) struct Directory(pub Engine);

impl DirectoryRepo for Directory {
    fn load(&self) -> Pending<DirectoryData> {
        self.0.read(|r| {
            let mut data = DirectoryData::default();
            r.scan(Table::Users, |_, v| {
                match decode::<UserRecord>(v) {
                    Ok(u) => data.users.push(u),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable user record"),
                }
                Ok(())
            })?;
            r.scan(Table::Clients, |_, v| {
                match decode::<ClientRecord>(v) {
                    Ok(c) => data.clients.push(c),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable client record"),
                }
                Ok(())
            })?;
            data.seeded = r.get(Table::Meta, SEED_MARK)?.is_some();
            Ok(data)
        })
    }

    fn seed(&self, admin: &UserRecord, client: &ClientRecord) -> Pending<bool> {
        let ops = (|| {
            Ok(vec![
                Op::put(Table::Users, admin.id.as_bytes().to_vec(), admin)?,
                Op::put(Table::Clients, client.client_id.as_bytes().to_vec(), client)?,
                Op::put(Table::Meta, SEED_MARK.to_vec(), &true)?,
            ])
        })();
        match ops {
            Ok(ops) => self.0.submit_if(vec![Guard::absent(Table::Meta, SEED_MARK)], ops),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn save_user(&self, user: &UserRecord) -> Pending<bool> {
        // One process writes this file, and the directory's book refuses a taken name first.
        let saved = self
            .0
            .submit_encoded(|| Ok(vec![Op::put(Table::Users, user.id.as_bytes().to_vec(), user)?]));
        Box::pin(async move { saved.await.map(|()| true) })
    }

    fn remove_user(&self, id: &str) -> Pending<()> {
        self.0.submit(vec![Op::delete(Table::Users, id.as_bytes().to_vec())])
    }

    fn save_client(&self, client: &ClientRecord) -> Pending<()> {
        self.0
            .submit_encoded(|| Ok(vec![Op::put(Table::Clients, client.client_id.as_bytes().to_vec(), client)?]))
    }

    fn user(&self, id: &str) -> Pending<Option<UserRecord>> {
        let key = id.as_bytes().to_vec();
        self.0.read(move |r| r.get(Table::Users, &key)?.map(|v| decode(&v)).transpose())
    }

    fn client(&self, client_id: &str) -> Pending<Option<ClientRecord>> {
        let key = client_id.as_bytes().to_vec();
        self.0.read(move |r| r.get(Table::Clients, &key)?.map(|v| decode(&v)).transpose())
    }

    fn remove_client(&self, client_id: &str) -> Pending<()> {
        self.0.submit(vec![Op::delete(Table::Clients, client_id.as_bytes().to_vec())])
    }
}
