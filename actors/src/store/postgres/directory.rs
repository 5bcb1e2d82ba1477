//! [`DirectoryRepo`] on PostgreSQL: `users` (usernames unique by index), `clients`, and the
//! seed mark in `meta`.

use super::writer::{Stmt, db_error};
use super::{Db, decode, json};
use crate::store::change::Change;
use crate::store::directory::{ClientRecord, DirectoryData, DirectoryRepo, UserRecord};
use crate::store::port::{Pending, StoreError};

pub(super) struct Directory(pub Db);

const SAVE_USER: &str = "INSERT INTO users (id, username, record) VALUES ($1, $2, $3::text::jsonb) \
     ON CONFLICT (id) DO UPDATE SET username = excluded.username, record = excluded.record";
const SAVE_CLIENT: &str = "INSERT INTO clients (client_id, record) VALUES ($1, $2::text::jsonb) \
     ON CONFLICT (client_id) DO UPDATE SET record = excluded.record";

fn failed<T: Send + 'static>(e: StoreError) -> Pending<T> {
    Box::pin(async move { Err(e) })
}

impl DirectoryRepo for Directory {
    fn load(&self) -> Pending<DirectoryData> {
        let db = self.0.clone();
        Box::pin(async move {
            let client = db.client().await?;
            let mut data = DirectoryData::default();
            for row in client.query("SELECT record::text FROM users", &[]).await.map_err(db_error)? {
                match decode::<UserRecord>(row.get(0)) {
                    Ok(u) => data.users.push(u),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable user record"),
                }
            }
            for row in client.query("SELECT record::text FROM clients", &[]).await.map_err(db_error)? {
                match decode::<ClientRecord>(row.get(0)) {
                    Ok(c) => data.clients.push(c),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable client record"),
                }
            }
            data.seeded = client
                .query_opt("SELECT 1 FROM meta WHERE name = 'seeded'", &[])
                .await
                .map_err(db_error)?
                .is_some();
            Ok(data)
        })
    }

    fn seed(&self, admin: &UserRecord, client: &ClientRecord) -> Pending<bool> {
        let (Ok(a), Ok(c)) = (json(admin), json(client)) else {
            return failed(StoreError::Encode("the first start's records".into()));
        };
        self.0.writer.submit(vec![
            Stmt::check(
                "WITH mark AS (INSERT INTO meta (name, value) VALUES ('seeded', 'true') ON CONFLICT DO NOTHING RETURNING 1), \
             u AS (INSERT INTO users (id, username, record) SELECT $1, $2, $3::text::jsonb WHERE EXISTS (SELECT 1 FROM mark) \
                   ON CONFLICT DO NOTHING), \
             c AS (INSERT INTO clients (client_id, record) SELECT $4, $5::text::jsonb WHERE EXISTS (SELECT 1 FROM mark) \
                   ON CONFLICT DO NOTHING) \
             SELECT EXISTS (SELECT 1 FROM mark)",
                vec![
                    Box::new(admin.id.clone()),
                    Box::new(admin.username.clone()),
                    Box::new(a),
                    Box::new(client.client_id.clone()),
                    Box::new(c),
                ],
            ),
            self.0
                .announce(&[Change::User(admin.id.clone()), Change::Client(client.client_id.clone())]),
        ])
    }

    fn save_user(&self, user: &UserRecord) -> Pending<bool> {
        match json(user) {
            Ok(u) => self.0.writer.submit_unique(vec![
                Stmt::exec(
                    SAVE_USER,
                    vec![Box::new(user.id.clone()), Box::new(user.username.clone()), Box::new(u)],
                ),
                self.0.announce(&[Change::User(user.id.clone())]),
            ]),
            Err(e) => failed(e),
        }
    }

    fn remove_user(&self, id: &str) -> Pending<()> {
        let write = self.0.writer.submit(vec![
            Stmt::exec("DELETE FROM users WHERE id = $1", vec![Box::new(id.to_owned())]),
            self.0.announce(&[Change::User(id.to_owned())]),
        ]);
        Box::pin(async move { write.await.map(|_| ()) })
    }

    fn save_client(&self, client: &ClientRecord) -> Pending<()> {
        match json(client) {
            Ok(c) => {
                let write = self.0.writer.submit(vec![
                    Stmt::exec(SAVE_CLIENT, vec![Box::new(client.client_id.clone()), Box::new(c)]),
                    self.0.announce(&[Change::Client(client.client_id.clone())]),
                ]);
                Box::pin(async move { write.await.map(|_| ()) })
            }
            Err(e) => failed(e),
        }
    }

    fn user(&self, id: &str) -> Pending<Option<UserRecord>> {
        let (db, id) = (self.0.clone(), id.to_owned());
        Box::pin(async move {
            let client = db.client().await?;
            let row = client
                .query_opt("SELECT record::text FROM users WHERE id = $1", &[&id])
                .await
                .map_err(db_error)?;
            row.map(|r| decode(r.get(0))).transpose()
        })
    }

    fn client(&self, client_id: &str) -> Pending<Option<ClientRecord>> {
        let (db, id) = (self.0.clone(), client_id.to_owned());
        Box::pin(async move {
            let client = db.client().await?;
            let row = client
                .query_opt("SELECT record::text FROM clients WHERE client_id = $1", &[&id])
                .await
                .map_err(db_error)?;
            row.map(|r| decode(r.get(0))).transpose()
        })
    }

    fn remove_client(&self, client_id: &str) -> Pending<()> {
        let write = self.0.writer.submit(vec![
            Stmt::exec("DELETE FROM clients WHERE client_id = $1", vec![Box::new(client_id.to_owned())]),
            self.0.announce(&[Change::Client(client_id.to_owned())]),
        ]);
        Box::pin(async move { write.await.map(|_| ()) })
    }
}
