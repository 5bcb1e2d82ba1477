//! The very first start: an administrator and the public client for CLI tools.

use std::path::{Path, PathBuf};

use ractor::ActorProcessingErr;

use super::book::DirectoryBook;
use super::records::{SEEDED_CLIENT_NAME, new_client};
use crate::crypto::password;
use crate::store::directory::{DirectoryRepo, UserRecord};
use crate::time::Secs;

/// Creates the admin user and the CLI client, unless another process did first. A generated
/// password goes to a file only its owner can read, never to the log.
pub async fn seed(
    book: &mut DirectoryBook,
    repo: &dyn DirectoryRepo,
    admin_password: Option<String>,
    password_file: Option<PathBuf>,
    now: Secs,
) -> Result<(), ActorProcessingErr> {
    let generated = admin_password.is_none();
    let password = admin_password.unwrap_or_else(|| password::random_password(16));
    let admin = UserRecord::local("admin".into(), password::hash(password.clone()).await?, true, now);
    let (client, _) = new_client(SEEDED_CLIENT_NAME, false, now);
    // The password file first: if it cannot be written, nothing is seeded and the next start
    // tries again, rather than leaving an admin whose password nobody knows.
    let shown = match (generated, password_file) {
        (true, Some(path)) => {
            let shown = path.display().to_string();
            tokio::task::spawn_blocking(move || write_private(&path, &password)).await??;
            Some(shown)
        }
        (true, None) => return Err("a generated admin password needs somewhere to be written".into()),
        (false, _) => None,
    };
    if !repo.seed(&admin, &client).await? {
        tracing::info!("another instance created the first admin and client; loading theirs");
        *book = DirectoryBook::load(repo.load().await?);
        return Ok(());
    }
    match shown {
        Some(shown) => {
            tracing::warn!(username = "admin", password_file = %shown, "first start: created the admin user; its generated password is in this file (readable only by this user). Sign in, change it, and delete the file")
        }
        None => tracing::warn!(username = "admin", "first start: created the admin user with ADMIN_PASSWORD"),
    }
    tracing::warn!(client_id = %client.client_id, name = SEEDED_CLIENT_NAME, "first start: created the public OAuth client for CLI tools");
    book.seed(admin, client);
    Ok(())
}

/// Writes `secret` to a new file that only this user may read (0600 on Unix).
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    // A new file, never an existing one (which might be a link elsewhere, or readable by others).
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
