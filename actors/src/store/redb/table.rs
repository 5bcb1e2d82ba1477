//! The file's layout: its tables, the changes and guards a batch carries, and the read-only
//! view that reads run against. The repositories speak in these; the engine applies them.

use redb::{ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::port::StoreError;

/// Every table: raw byte keys and values; the owning repository defines the record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    /// Server-wide values: generated secrets, the keyring, the seed mark, the health probe.
    Meta,
    /// User id → [`crate::store::directory::UserRecord`].
    Users,
    /// OAuth client id → [`crate::store::directory::ClientRecord`].
    Clients,
    /// SHA-256(device code) → [`crate::store::device::DeviceRecord`].
    DeviceCodes,
    /// Token id (jti) → [`crate::store::token::TokenRecord`].
    Tokens,
    /// Authorization id → issued-at seconds: the mark that an authorization's first tokens
    /// were issued (the guard of [`crate::store::token::TokenRepo::issue`]).
    Authorizations,
    /// SHA-256(session id) → [`crate::store::session::SessionRecord`].
    Sessions,
    /// Unix ms + sequence (big-endian) → [`crate::store::audit::AuditEvent`].
    Audit,
}

impl Table {
    /// Every table, in declaration order (`table as usize` indexes this array).
    pub const ALL: [Table; 8] = [
        Table::Meta,
        Table::Users,
        Table::Clients,
        Table::DeviceCodes,
        Table::Tokens,
        Table::Authorizations,
        Table::Sessions,
        Table::Audit,
    ];

    pub(super) fn def(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(match self {
            Table::Meta => "meta",
            Table::Users => "users",
            Table::Clients => "clients",
            Table::DeviceCodes => "device_codes",
            Table::Tokens => "tokens",
            Table::Authorizations => "authorizations",
            Table::Sessions => "sessions",
            Table::Audit => "audit",
        })
    }
}

/// One change to one record.
#[derive(Debug, Clone)]
pub(super) enum Op {
    Put { table: Table, key: Vec<u8>, value: Vec<u8> },
    Delete { table: Table, key: Vec<u8> },
}

impl Op {
    /// A put of a serde record. Serialising plain data structs cannot fail in practice; if it
    /// ever does the error surfaces when the batch is written.
    pub fn put<T: Serialize>(table: Table, key: impl Into<Vec<u8>>, value: &T) -> Result<Op, StoreError> {
        let value = serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))?;
        Ok(Op::Put {
            table,
            key: key.into(),
            value,
        })
    }
    pub fn delete(table: Table, key: impl Into<Vec<u8>>) -> Op {
        Op::Delete { table, key: key.into() }
    }
}

/// A condition on the stored value under one key, checked inside the write transaction.
pub(super) struct Guard {
    pub table: Table,
    pub key: Vec<u8>,
    /// Whether the batch may be applied, given the value now stored (if any).
    pub holds: fn(Option<&[u8]>) -> bool,
}

impl Guard {
    /// Holds when nothing is stored under `key`.
    pub fn absent(table: Table, key: impl Into<Vec<u8>>) -> Guard {
        Guard {
            table,
            key: key.into(),
            holds: |v| v.is_none(),
        }
    }
}

pub(super) fn storage<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::storage(e)
}

/// Decodes a stored record.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode(e.to_string()))
}

/// A read-only view of the database, handed to closures that run on the store thread.
pub(super) struct Reader<'a> {
    pub(super) txn: &'a redb::ReadTransaction,
}

impl Reader<'_> {
    /// Every record of a table, in key order.
    pub fn scan(&self, table: Table, mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(storage(e)),
        };
        for row in t.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    /// Keys below `end`, in ascending order; stops when `f` returns `false`.
    pub fn scan_range(&self, table: Table, end: &[u8], mut f: impl FnMut(&[u8]) -> Result<bool, StoreError>) -> Result<(), StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(storage(e)),
        };
        for row in t.range::<&[u8]>(..end).map_err(storage)? {
            let (k, _) = row.map_err(storage)?;
            if !f(k.value())? {
                break;
            }
        }
        Ok(())
    }

    /// Records in descending key order, starting below `before` (or at the last key); stops
    /// when `f` returns `false`.
    pub fn scan_rev(
        &self,
        table: Table,
        before: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(storage(e)),
        };
        let rows = match before {
            Some(b) => t.range::<&[u8]>(..b).map_err(storage)?,
            None => t.range::<&[u8]>(..).map_err(storage)?,
        };
        for row in rows.rev() {
            let (k, v) = row.map_err(storage)?;
            if !f(k.value(), v.value())? {
                break;
            }
        }
        Ok(())
    }

    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        Ok(t.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }
}
