//! The device-fleet simulator: N devices each request a code, poll at the advertised interval
//! (honouring `slow_down`), get approved by simulated people over the real web pages (sign-in
//! session, CSRF, verify, approve), redeem, then refresh once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// No single request may take longer than this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One device-grant poll of `/oauth/token`: whether it succeeded, and the JSON answer.
pub async fn poll_once(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    device_code: &str,
) -> Result<(bool, serde_json::Value), String> {
    let r = http
        .post(token_url)
        .form(&[("grant_type", DEVICE_GRANT), ("device_code", device_code), ("client_id", client_id)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = r.status().is_success();
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    Ok((ok, v))
}

/// A person at a browser without JavaScript: signed in once, approving codes.
pub struct Person {
    http: reqwest::Client,
    server: String,
    csrf: String,
}

fn csrf_of(page: &str) -> Option<String> {
    let marker = "name=\"csrf_token\" value=\"";
    let start = page.find(marker)? + marker.len();
    page[start..].split('"').next().map(str::to_owned)
}

/// Fetches a page and returns the CSRF token of its form.
async fn page_csrf(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let page = http
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    csrf_of(&page).ok_or_else(|| format!("no csrf token on {url}"))
}

impl Person {
    pub async fn login(server: &str, username: &str, password: &str) -> Result<Person, String> {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let csrf = page_csrf(&http, &format!("{server}/login")).await?;
        let r = http
            .post(format!("{server}/login"))
            .form(&[
                ("username", username),
                ("password", password),
                ("csrf_token", &csrf),
                ("next", "/device"),
            ])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != reqwest::StatusCode::SEE_OTHER {
            return Err(format!("sign-in failed with {}", r.status()));
        }
        let csrf = page_csrf(&http, &format!("{server}/device")).await?;
        Ok(Person {
            http,
            server: server.to_owned(),
            csrf,
        })
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<(), String> {
        let r = self
            .http
            .post(format!("{}{path}", self.server))
            .form(form)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let _ = r.bytes().await;
        if status != reqwest::StatusCode::OK {
            return Err(format!("{path} answered {status}"));
        }
        Ok(())
    }

    pub async fn verify(&self, user_code: &str) -> Result<(), String> {
        self.post("/device/verify", &[("user_code", user_code), ("csrf_token", &self.csrf)])
            .await
    }

    pub async fn decide(&self, user_code: &str) -> Result<(), String> {
        self.post(
            "/device/approve",
            &[("user_code", user_code), ("csrf_token", &self.csrf), ("action", "approve")],
        )
        .await
    }

    pub async fn approve(&self, user_code: &str) -> Result<(), String> {
        self.verify(user_code).await?;
        self.decide(user_code).await
    }
}

#[derive(clap::Args)]
pub struct FleetArgs {
    /// The server, or several instances of one cluster, comma-separated: device i asks the
    /// i-th for its code and polls them in turn; person j signs in on the j-th
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<String>,
    #[arg(long)]
    client_id: String,
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Simulated people approving codes, each with one signed-in session
    #[arg(long, default_value_t = 32)]
    people: usize,
    #[arg(long, default_value = "admin")]
    username: String,
    #[arg(long)]
    password: String,
    /// Devices start spread over this many seconds
    #[arg(long, default_value_t = 5)]
    ramp_secs: u64,
    /// Mean time a person takes to approve after the code appears (spread evenly over 0..2×),
    /// so devices poll while their authorization is pending
    #[arg(long, default_value_t = 3000)]
    think_ms: u64,
}

/// Latencies of one step, in microseconds.
#[derive(Default)]
struct Step(Mutex<Vec<u64>>);

impl Step {
    async fn add(&self, since: Instant) {
        self.0.lock().await.push(since.elapsed().as_micros() as u64);
    }
    async fn summary(&self) -> (usize, f64, f64) {
        let mut v = self.0.lock().await.clone();
        v.sort_unstable();
        let pct = |p: f64| {
            if v.is_empty() {
                0.0
            } else {
                v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
            }
        };
        (v.len(), pct(0.50), pct(0.99))
    }
}

#[derive(Default)]
struct Stats {
    code: Step,
    poll: Step,
    verify: Step,
    approve: Step,
    refresh: Step,
    flow: Step,
    errors: AtomicU64,
    slow_down: AtomicU64,
    pending: AtomicU64,
}

async fn device(
    i: usize,
    http: reqwest::Client,
    a: Arc<FleetArgs>,
    stats: Arc<Stats>,
    approvals: mpsc::Sender<String>,
) -> Result<(), String> {
    let started = Instant::now();
    let t = Instant::now();
    let servers = &a.server;
    let r = http
        .post(format!("{}/oauth/device/code", servers[i % servers.len()]))
        .form(&[("client_id", a.client_id.as_str())])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("device/code answered {}", r.status()));
    }
    let dc: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    stats.code.add(t).await;
    let device_code = dc["device_code"].as_str().ok_or("no device_code")?.to_owned();
    let mut interval = Duration::from_secs(dc["interval"].as_u64().unwrap_or(5));
    // The person reads the code and approves after a while (evenly spread, deterministic).
    let user_code = dc["user_code"].as_str().ok_or("no user_code")?.to_owned();
    let think = Duration::from_millis(2 * a.think_ms * ((i as u64 * 7919) % 1000) / 1000);
    tokio::spawn(async move {
        tokio::time::sleep(think).await;
        let _ = approvals.send(user_code).await;
    });
    let token_url = |n: usize| format!("{}/oauth/token", servers[(i + n) % servers.len()]);
    let mut polls = 0;
    let tokens = loop {
        tokio::time::sleep(interval).await;
        let t = Instant::now();
        polls += 1;
        let (ok, v) = poll_once(&http, &token_url(polls), &a.client_id, &device_code).await?;
        stats.poll.add(t).await;
        if ok {
            break v;
        }
        match v["error"].as_str() {
            Some("authorization_pending") => {
                stats.pending.fetch_add(1, Ordering::Relaxed);
            }
            Some("slow_down") => {
                stats.slow_down.fetch_add(1, Ordering::Relaxed);
                interval += Duration::from_secs(5);
            }
            other => return Err(format!("poll answered {other:?}")),
        }
    };
    stats.flow.add(started).await;
    let t = Instant::now();
    let r = http
        .post(token_url(polls + 1))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap_or_default()),
            ("client_id", &a.client_id),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("refresh answered {}", r.status()));
    }
    let _ = r.bytes().await;
    stats.refresh.add(t).await;
    Ok(())
}

pub async fn run(a: FleetArgs) -> Result<(), String> {
    let a = Arc::new(a);
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel::<String>(a.devices.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let mut people = Vec::new();
    let login_started = Instant::now();
    for j in 0..a.people.max(1) {
        people.push(Person::login(&a.server[j % a.server.len()], &a.username, &a.password).await?);
    }
    let login_ms = login_started.elapsed().as_secs_f64() * 1000.0 / a.people.max(1) as f64;
    let started = Instant::now();
    let approvers: Vec<_> = people
        .into_iter()
        .map(|p| {
            let (rx, stats) = (rx.clone(), stats.clone());
            tokio::spawn(async move {
                loop {
                    let code = { rx.lock().await.recv().await };
                    let Some(code) = code else { break };
                    let t = Instant::now();
                    if p.verify(&code).await.is_err() {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    stats.verify.add(t).await;
                    let t = Instant::now();
                    match p.decide(&code).await {
                        Ok(()) => stats.approve.add(t).await,
                        Err(_) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let mut devices = Vec::with_capacity(a.devices);
    let ramp = Duration::from_secs(a.ramp_secs);
    for i in 0..a.devices {
        let delay = ramp.mul_f64(i as f64 / a.devices.max(1) as f64);
        let (http, a2, stats, tx) = (http.clone(), a.clone(), stats.clone(), tx.clone());
        devices.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Err(e) = device(i, http, a2, stats.clone(), tx).await
                && stats.errors.fetch_add(1, Ordering::Relaxed) < 5
            {
                eprintln!("device error: {e}");
            }
        }));
    }
    drop(tx);
    // Every flow must finish by this deadline: a device whose approval failed would otherwise
    // poll until its code expires.
    let deadline = tokio::time::Instant::now() + ramp + Duration::from_millis(2 * a.think_ms) + Duration::from_secs(60);
    let mut late = 0;
    for d in devices {
        let abort = d.abort_handle();
        if tokio::time::timeout_at(deadline, d).await.is_err() {
            abort.abort();
            late += 1;
        }
    }
    if late > 0 {
        stats.errors.fetch_add(late, Ordering::Relaxed);
        eprintln!("{late} devices had no token by the deadline");
    }
    for ap in approvers {
        let abort = ap.abort_handle();
        if tokio::time::timeout_at(deadline + Duration::from_secs(5), ap).await.is_err() {
            abort.abort();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (flows, flow50, flow99) = stats.flow.summary().await;
    println!(
        "fleet_devices={} flows={flows} seconds={secs:.1} flows_per_s={:.0} errors={} slow_down={} pending={}",
        a.devices,
        flows as f64 / secs,
        stats.errors.load(Ordering::Relaxed),
        stats.slow_down.load(Ordering::Relaxed),
        stats.pending.load(Ordering::Relaxed)
    );
    println!("step=login count={} p50_ms={login_ms:.2} p99_ms={login_ms:.2}", a.people);
    for (name, step) in [
        ("code", &stats.code),
        ("poll", &stats.poll),
        ("verify", &stats.verify),
        ("approve", &stats.approve),
        ("refresh", &stats.refresh),
    ] {
        let (n, p50, p99) = step.summary().await;
        println!("step={name} count={n} p50_ms={p50:.2} p99_ms={p99:.2}");
    }
    println!("step=flow count={flows} p50_ms={flow50:.2} p99_ms={flow99:.2}");
    if stats.errors.load(Ordering::Relaxed) > 0 || flows != a.devices {
        return Err(format!(
            "{} errors, {flows} of {} flows completed",
            stats.errors.load(Ordering::Relaxed),
            a.devices
        ));
    }
    Ok(())
}
