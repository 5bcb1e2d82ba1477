//! `authgate-bench`: the Rust half of `scripts/bench.sh`.

mod fleet;
mod floor;
mod idle;
mod seed;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmark tools for AuthGate")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the floor server (fixed authorization_pending answers)
    Floor {
        #[arg(long, default_value = "127.0.0.1:9090")]
        addr: SocketAddr,
    },
    /// Request COUNT device codes and write them, one per line, to OUT
    Codes(seed::CodesArgs),
    /// Run a full device flow and print the access token
    Token(seed::TokenArgs),
    /// Approve COUNT codes, then redeem them all concurrently (durable write rate)
    Redeem(seed::RedeemArgs),
    /// Simulate a fleet of devices and the people who approve them
    Fleet(fleet::FleetArgs),
    /// Open many kept-alive connections and report the server's memory per connection
    Idle(idle::IdleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Floor { addr } => floor::run(addr).await.map_err(|e| e.to_string()),
            Cmd::Codes(a) => seed::codes(a).await,
            Cmd::Token(a) => seed::token(a).await,
            Cmd::Redeem(a) => seed::redeem(a).await,
            Cmd::Fleet(a) => fleet::run(a).await,
            Cmd::Idle(a) => idle::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
