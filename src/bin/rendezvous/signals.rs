//! Ctrl-C (SIGINT) and SIGTERM, which systemd, Docker and Kubernetes send, stop a long-running
//! command the same way: it finishes cleanly (unregisters, closes its store). A second signal
//! while it does exits at once.

use std::fmt;

use crate::common::CliError;

/// The stop signals a command listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// The exit status of a process ended by this signal, as shells report it (128 + number).
    pub fn exit_status(self) -> i32 {
        match self {
            Signal::Interrupt => 128 + 2,
            Signal::Terminate => 128 + 15,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT (Ctrl-C)",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// The installed handlers. From [`Signals::install`] on, the signals no longer end the process
/// by themselves: the command must listen ([`Signals::first`]).
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; call it before the command starts its work, so that a signal
    /// that comes early is not lost.
    pub fn install() -> Result<Self, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let fail = |e: std::io::Error| {
                CliError::Failed(format!("cannot install the signal handlers: {e}"))
            };
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(fail)?,
                terminate: signal(SignalKind::terminate()).map_err(fail)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => Signal::Interrupt,
                _ = self.terminate.recv() => Signal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }

    /// Waits for the first signal; from then on a second one exits the process at once
    /// (status 128 + its number), whatever the command is still doing to finish.
    pub async fn first(mut self) -> Signal {
        let signal = self.next().await;
        tokio::spawn(async move {
            let again = self.next().await;
            eprintln!("{again} again: exiting at once");
            std::process::exit(again.exit_status());
        });
        signal
    }
}
