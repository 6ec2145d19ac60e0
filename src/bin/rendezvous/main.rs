//! `rendezvous`: run a rendezvous server, discover and register against one, load-test one.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod common;
mod data_dir;
mod demo;
mod discover;
mod flood;
mod load;
mod metrics;
#[cfg(feature = "redis")]
mod redis_store;
mod register;
mod serve;
mod streams;

/// The libp2p rendezvous server and client.
#[derive(Debug, Parser)]
#[command(name = "rendezvous", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a rendezvous server (TCP + QUIC) until Ctrl-C.
    Serve(serve::Args),
    /// Discover peers through a rendezvous server and print them.
    Discover(discover::Args),
    /// Register in namespaces with a rendezvous server and keep the registrations fresh.
    Register(register::Args),
    /// Load-test a rendezvous server: connect, register, discover; report throughput.
    Load(load::Args),
    /// Show a server and peers discovering each other on loopback, then exit.
    Demo(demo::Args),
    /// Flood a loopback server one way while a legitimate client uses it (benches/flood.sh).
    Flood(flood::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print as clap prints them.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // One line saying what was wrong and expected; clap's tips and usage follow on
            // stderr only with --help.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{line} (see --help)");
            return ExitCode::from(2);
        }
    };
    common::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Discover(args) => discover::run(args).await,
            Command::Register(args) => register::run(args).await,
            Command::Load(args) => load::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Flood(args) => flood::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_status())
        }
    }
}
