//! [`DeviceRepo`] on redb: `device_codes`, SHA-256(device code) → JSON record.

use super::engine::{Engine, Guard, Op, Table, decode};
use crate::store::device::{DeviceKey, DeviceRecord, DeviceRepo, RecordState};
use crate::store::port::Pending;
use crate::time::Millis;

pub(super) struct Devices(pub Engine);

impl DeviceRepo for Devices {
    fn load(&self, keep_from: Millis) -> Pending<Vec<(DeviceKey, DeviceRecord)>> {
        self.0
            .load_live(Table::DeviceCodes, move |rec: &DeviceRecord| rec.expires_at_ms >= keep_from)
    }

    fn insert(&self, key: DeviceKey, record: &DeviceRecord) -> Pending<bool> {
        // One process writes this file, and its book picked a user code no live
        // authorization has.
        let write = self
            .0
            .submit_encoded(|| Ok(vec![Op::put(Table::DeviceCodes, key.to_vec(), record)?]));
        Box::pin(async move { write.await.map(|()| true) })
    }

    fn decide(&self, key: DeviceKey, record: &DeviceRecord) -> Pending<bool> {
        let still_pending = Guard {
            table: Table::DeviceCodes,
            key: key.to_vec(),
            holds: |v| {
                v.and_then(|v| decode::<DeviceRecord>(v).ok())
                    .is_some_and(|r| r.state == RecordState::Pending)
            },
        };
        match Op::put(Table::DeviceCodes, key.to_vec(), record) {
            Ok(op) => self.0.submit_if(vec![still_pending], vec![op]),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn prune(&self, before: Millis) -> Pending<()> {
        let load = self.load(before);
        Box::pin(async move { load.await.map(|_| ()) })
    }

    fn get(&self, key: DeviceKey) -> Pending<Option<DeviceRecord>> {
        self.0
            .read(move |r| r.get(Table::DeviceCodes, &key[..])?.map(|v| decode(&v)).transpose())
    }

    fn by_user_code(&self, user_code: &str) -> Pending<Option<(DeviceKey, DeviceRecord)>> {
        let user_code = user_code.to_owned();
        self.0.read(move |r| {
            let mut found = None;
            r.scan(Table::DeviceCodes, |k, v| {
                if found.is_none()
                    && let (Ok(key), Ok(rec)) = (DeviceKey::try_from(k), decode::<DeviceRecord>(v))
                    && rec.user_code == user_code
                {
                    found = Some((key, rec));
                }
                Ok(())
            })?;
            Ok(found)
        })
    }

    fn remove(&self, keys: &[DeviceKey]) -> Pending<()> {
        self.0
            .submit(keys.iter().map(|k| Op::delete(Table::DeviceCodes, k.to_vec())).collect())
    }
}
