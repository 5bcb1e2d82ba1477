//! Filling a server with work: many pending device codes, or one real access token.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::fleet::{DEVICE_GRANT, Person, poll_once};

#[derive(clap::Args)]
pub struct CodesArgs {
    #[arg(long)]
    server: String,
    #[arg(long)]
    client_id: String,
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// File to write the device codes to, one per line
    #[arg(long)]
    out: std::path::PathBuf,
    /// The device authorization endpoint's path (for peers)
    #[arg(long, default_value = "/oauth/device/code")]
    path: String,
}

/// Requests `count` device codes over `concurrency` connections; prints the rate.
pub async fn codes(a: CodesArgs) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let url = format!("{}{}", a.server, a.path);
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (http, next, errors, url, cid, count) = (
                http.clone(),
                next.clone(),
                errors.clone(),
                url.clone(),
                a.client_id.clone(),
                a.count,
            );
            tokio::spawn(async move {
                let mut got = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let r = http.post(&url).form(&[("client_id", cid.as_str())]).send().await;
                    match r {
                        Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
                            Ok(v) => got.push(v["device_code"].as_str().unwrap_or_default().to_owned()),
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                got
            })
        })
        .collect();
    let mut all = Vec::with_capacity(a.count);
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())?);
    }
    let secs = started.elapsed().as_secs_f64();
    std::fs::write(&a.out, all.join("\n") + "\n").map_err(|e| e.to_string())?;
    println!(
        "codes={} errors={} seconds={secs:.2} rate={:.0}",
        all.len(),
        errors.load(Ordering::Relaxed),
        all.len() as f64 / secs
    );
    if errors.load(Ordering::Relaxed) > 0 {
        return Err("some code requests failed".into());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct TokenArgs {
    #[arg(long)]
    server: String,
    #[arg(long)]
    client_id: String,
    #[arg(long, default_value = "admin")]
    username: String,
    #[arg(long)]
    password: String,
}

/// One real device flow; prints the access token.
pub async fn token(a: TokenArgs) -> Result<(), String> {
    let http = reqwest::Client::new();
    let dc: serde_json::Value = http
        .post(format!("{}/oauth/device/code", a.server))
        .form(&[("client_id", a.client_id.as_str())])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let person = Person::login(&a.server, &a.username, &a.password).await?;
    person.approve(dc["user_code"].as_str().unwrap_or_default()).await?;
    let interval = dc["interval"].as_u64().unwrap_or(5);
    for _ in 0..10 {
        let (ok, v) = poll_once(
            &http,
            &format!("{}/oauth/token", a.server),
            &a.client_id,
            dc["device_code"].as_str().unwrap_or_default(),
        )
        .await?;
        if ok {
            println!("{}", v["access_token"].as_str().unwrap_or_default());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
    }
    Err("no token after 10 polls".into())
}

#[derive(clap::Args)]
pub struct RedeemArgs {
    #[arg(long)]
    server: String,
    #[arg(long)]
    client_id: String,
    #[arg(long, default_value_t = 5_000)]
    count: usize,
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[arg(long, default_value = "admin")]
    username: String,
    #[arg(long)]
    password: String,
}

/// Durable token redemption: requests and approves COUNT codes, then redeems them all at once
/// over CONCURRENCY connections; prints the redemption rate.
pub async fn redeem(a: RedeemArgs) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let mut people = Vec::new();
    for _ in 0..16 {
        people.push(Arc::new(Person::login(&a.server, &a.username, &a.password).await?));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let prepare: Vec<_> = people
        .iter()
        .map(|p| {
            let (p, http, next, server, cid, count) = (
                p.clone(),
                http.clone(),
                next.clone(),
                a.server.clone(),
                a.client_id.clone(),
                a.count,
            );
            tokio::spawn(async move {
                let mut codes = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let v: serde_json::Value = http
                        .post(format!("{server}/oauth/device/code"))
                        .form(&[("client_id", cid.as_str())])
                        .send()
                        .await
                        .map_err(|e| e.to_string())?
                        .json()
                        .await
                        .map_err(|e| e.to_string())?;
                    p.approve(v["user_code"].as_str().unwrap_or_default()).await?;
                    codes.push(v["device_code"].as_str().unwrap_or_default().to_owned());
                }
                Ok::<_, String>(codes)
            })
        })
        .collect();
    let mut codes = Vec::new();
    for t in prepare {
        codes.extend(t.await.map_err(|e| e.to_string())??);
    }
    let codes = Arc::new(codes);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.concurrency)
        .map(|_| {
            let (http, codes, next, errors, url, cid) = (
                http.clone(),
                codes.clone(),
                next.clone(),
                errors.clone(),
                format!("{}/oauth/token", a.server),
                a.client_id.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(code) = codes.get(i) else { break };
                    let r = http
                        .post(&url)
                        .form(&[("grant_type", DEVICE_GRANT), ("device_code", code.as_str()), ("client_id", &cid)])
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "redeemed={} errors={errors} seconds={secs:.2} rate={:.0}",
        codes.len() - errors,
        (codes.len() - errors) as f64 / secs
    );
    if errors > 0 {
        return Err(format!("{errors} redemptions failed"));
    }
    Ok(())
}
