//! Where a command's words go: results on stdout (a closed stdout ends the command quietly),
//! logs on stderr (coloured only on a terminal), failures named with their causes, and
//! warnings that would repeat said at most once per interval.

use std::{
    error::Error,
    fmt,
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), so stdout stays for output.
/// Colour only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>): a log file or a journal gets plain text.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p_swarm=warn"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .try_init();
}

/// Stdout cannot be written any more (the reader went away, as `head -1` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdoutClosed;

/// Writes `line` and a newline to stdout and flushes it, so a reader sees each line as it
/// happens. Any write error means nobody reads what follows.
pub fn print_line(line: &str) -> Result<(), StdoutClosed> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|_| StdoutClosed)
}

/// `println!` for a command with nothing to finish before it exits (`load`, `demo`, `flood`):
/// a closed stdout ends the process quietly (status 0) rather than with a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        if $crate::output::print_line(&format!($($arg)*)).is_err() {
            std::process::exit(0);
        }
    };
}
pub(crate) use outln;

/// `error` and each of its sources, joined by `: `, leaving out empty and repeated texts
/// (libp2p's transport errors display as nothing and keep their reason in a source).
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The innermost non-empty text of `error`'s chain: the reason itself ("Connection refused
/// (os error 111)"), without the layers that wrapped it.
pub fn root_cause(error: &(dyn Error + 'static)) -> String {
    let mut found = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() {
            found = text;
        }
        next = e.source();
    }
    found
}

/// Lets a warning that may repeat (a store that is down, a listener that keeps failing)
/// through at most once per `every`, and counts what it held back meanwhile. Pure: the caller
/// passes the time.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)` when a warning may be said at `now`, `n` being how many were held back since
    /// the last one said; `None` when this one is to be held back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }

    /// The condition ended: the next warning is said at once, whenever it comes.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn reset(&mut self) {
        self.last = None;
        self.held_back = 0;
    }
}

/// How often a repeating warning is said at most.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// ` (N more like it since)` for a warning that held back `n` others, else nothing.
pub struct HeldBack(pub u64);

impl fmt::Display for HeldBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more like it held back)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn given_an_error_with_an_empty_layer_then_the_chain_names_every_reason_once() {
        let error = Layer(
            "",
            Some(Box::new(Layer(
                "Address already in use (os error 98)",
                Some(Box::new(Layer(
                    "Address already in use (os error 98)",
                    None,
                ))),
            ))),
        );
        assert_eq!(chain(&error), "Address already in use (os error 98)");
        assert_eq!(root_cause(&error), "Address already in use (os error 98)");
        let error = Layer("dial failed", Some(Box::new(Layer("refused", None))));
        assert_eq!(chain(&error), "dial failed: refused");
        assert_eq!(root_cause(&error), "refused");
    }

    #[test]
    fn given_warnings_within_the_interval_then_they_are_held_back_and_counted() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut throttle = Throttle::new(10 * second);
        assert_eq!(throttle.allow(t0), Some(0));
        assert_eq!(throttle.allow(t0 + second), None);
        assert_eq!(throttle.allow(t0 + 9 * second), None);
        assert_eq!(throttle.allow(t0 + 10 * second), Some(2));
        assert_eq!(throttle.allow(t0 + 11 * second), None);
        throttle.reset();
        assert_eq!(throttle.allow(t0 + 12 * second), Some(0));
        assert_eq!(HeldBack(0).to_string(), "");
        assert_eq!(HeldBack(2).to_string(), " (2 more like it held back)");
    }
}
