//! Records the git commit for `authgate --version` (or AUTHGATE_GIT_COMMIT, e.g. in Docker builds).
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=AUTHGATE_GIT_COMMIT");
    for p in [".git/HEAD", ".git/refs/heads"] {
        if Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = std::env::var("AUTHGATE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AUTHGATE_GIT_COMMIT={commit}");
}
