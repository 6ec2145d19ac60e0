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
mod node;
mod noise;
mod output;
#[cfg(feature = "redis")]
mod redis_store;
mod register;
mod serve;
mod session;
mod signals;
mod slim;
mod streams;
mod tcp;
mod tls;
mod watch;
#[cfg(feature = "webrtc")]
mod webrtc;

/// The exit statuses, shown by `--help` and listed in the README.
pub const EXIT_CODES: &str = "\
Exit status:
  0         done; or stopped by Ctrl-C or SIGTERM (registrations removed first), or stdout closed
  1         failed while running; the message says what (for example: `discover --once` could
            not reach the server)
  2         unusable arguments: a bad flag value, a key file that is no key, a listen address
            that is in use or not ours
  3         the server refused a request for good, with a status it would give again
            (E_INVALID_TTL, E_INVALID_NAMESPACE, E_INVALID_SIGNED_PEER_RECORD, E_NOT_AUTHORIZED;
            its statusText is printed), or does not speak the protocol id: change the request
  4         the peer at --server's address has another peer id than --server's /p2p/ part
  130, 143  a second Ctrl-C or SIGTERM while stopping: exited at once";

/// The libp2p rendezvous server and client.
#[derive(Debug, Parser)]
#[command(name = "rendezvous", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a rendezvous server (TCP, QUIC, WebSocket) until Ctrl-C or SIGTERM.
    #[command(after_help = EXIT_CODES)]
    Serve(Box<serve::Args>),
    /// Discover peers through a rendezvous server and print them.
    #[command(after_help = EXIT_CODES)]
    Discover(discover::Args),
    /// Register in namespaces with a rendezvous server and keep the registrations fresh.
    #[command(after_help = EXIT_CODES)]
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
            eprintln!("{} (see --help)", usage_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    output::init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
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

/// clap's error as one line: its first paragraph, which says what was wrong and names what is
/// missing (`the following required arguments were not provided:` is followed by the arguments
/// on lines of their own), without the tips and usage that follow; those are in --help.
fn usage_line(clap_error: &str) -> String {
    let paragraph: Vec<&str> = clap_error
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    match paragraph.join(" ") {
        line if line.is_empty() => "error: invalid arguments".into(),
        line => line,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn a_missing_argument_is_named_on_the_one_line() {
        for (args, missing) in [
            (
                &["rendezvous", "register"][..],
                &["--server", "--namespace"][..],
            ),
            (
                &["rendezvous", "discover", "--namespace", "x"][..],
                &["--server"][..],
            ),
            (&["rendezvous", "load"][..], &["--server"][..]),
        ] {
            let error = Cli::try_parse_from(args).unwrap_err();
            let line = usage_line(&error.to_string());
            assert!(line.starts_with("error: "), "{line}");
            for flag in missing {
                assert!(line.contains(flag), "{args:?}: {line}");
            }
        }
    }

    #[test]
    fn help_lists_the_exit_codes() {
        for args in [
            &["rendezvous", "--help"][..],
            &["rendezvous", "register", "--help"][..],
        ] {
            let help = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(help.contains("Exit status:"), "{args:?}");
            assert!(help.contains("E_INVALID_TTL"), "{args:?}");
        }
    }
}
