//! The loop of the long-running client commands (`register`, and `discover` without `--once`):
//! it prints what changes, says each failure once ([`Watch`]), ends on a failure the server
//! would repeat, and stops cleanly (unregistering everywhere) on Ctrl-C, SIGTERM or a closed
//! stdout.

use std::{process::ExitCode, time::Duration};

use futures::StreamExt;
use libp2p::{swarm::SwarmEvent, Swarm};
use rendezvous_discovery::client;

use crate::{
    common::{CliError, CliResult},
    discover::{on_swarm_event, Node, NodeEvent},
    output::{print_line, StdoutClosed},
    signals::Signals,
    watch::{Say, Watch},
};

/// How long to wait for the UNREGISTERs to be written once the command stops.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the loop ended.
enum End {
    Signal,
    StdoutClosed,
    Failed(CliError),
}

/// Runs `swarm` until a signal, a closed stdout or a failure for good; then unregisters.
/// `announce` prints our peer id first (`register` does, so a user can find the registration).
pub async fn run(
    mut swarm: Swarm<Node>,
    mut watch: Watch,
    json: bool,
    announce: bool,
    signals: Signals,
) -> CliResult {
    let mut signal = std::pin::pin!(signals.first());
    let mut stdout_open = true;
    let end = 'run: {
        if announce {
            let peer = swarm.local_peer_id().to_string();
            let line = if json {
                serde_json::json!({"event": "started", "peer": peer}).to_string()
            } else {
                format!("peer {peer}")
            };
            if print_line(&line).is_err() {
                stdout_open = false;
                break 'run End::StdoutClosed;
            }
        }
        loop {
            let event = tokio::select! {
                event = swarm.select_next_some() => event,
                signal = &mut signal => {
                    tracing::info!("stopping on {signal}");
                    break 'run End::Signal;
                }
            };
            on_swarm_event(&mut swarm, &event);
            let said = match &event {
                SwarmEvent::Behaviour(NodeEvent::Rendezvous(event)) => watch.on_client(event),
                event => watch.on_swarm(event),
            };
            match said.map(|said| say(said, &mut stdout_open)) {
                Ok(Ok(())) => {}
                Ok(Err(StdoutClosed)) => break 'run End::StdoutClosed,
                Err(error) => break 'run End::Failed(error),
            }
        }
    };
    swarm.behaviour_mut().rendezvous.stop();
    let stopped = tokio::time::timeout(STOP_GRACE, async {
        loop {
            let event = tokio::select! {
                event = swarm.select_next_some() => event,
                // The first signal has been taken: a later one exits at once by itself.
                signal = &mut signal, if !matches!(end, End::Signal) => {
                    eprintln!("{signal} while stopping: exiting at once");
                    std::process::exit(signal.exit_status());
                }
            };
            if let SwarmEvent::Behaviour(NodeEvent::Rendezvous(event)) = event {
                if let Ok(said) = watch.on_client(&event) {
                    let _ = say(said, &mut stdout_open);
                }
                if matches!(event, client::Event::Stopped) {
                    return;
                }
            }
        }
    })
    .await;
    match (end, stopped) {
        (End::Failed(error), _) => Err(error),
        (End::Signal | End::StdoutClosed, Ok(())) => Ok(ExitCode::SUCCESS),
        (End::Signal | End::StdoutClosed, Err(_)) => Err(CliError::Failed(format!(
            "the unregistrations were not all sent within {} s; the server drops them when \
             their TTL ends",
            STOP_GRACE.as_secs()
        ))),
    }
}

/// Says `said`: results on stdout while it is open, the rest in the log.
pub fn say(said: Vec<Say>, stdout_open: &mut bool) -> Result<(), StdoutClosed> {
    for item in said {
        match item {
            Say::Out(line) if *stdout_open => {
                if print_line(&line).is_err() {
                    *stdout_open = false;
                    return Err(StdoutClosed);
                }
            }
            Say::Out(_) => {}
            Say::Warn(text) => tracing::warn!("{text}"),
            Say::Info(text) => tracing::info!("{text}"),
        }
    }
    Ok(())
}
