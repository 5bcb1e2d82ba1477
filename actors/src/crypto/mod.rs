//! Credentials: generating and hashing secrets, hashing passwords, and the JWT signing keys.

pub mod keys;
pub mod password;
pub mod secret;
