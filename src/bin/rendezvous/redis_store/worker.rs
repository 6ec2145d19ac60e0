//! The task that talks to Redis: takes the queued jobs (at most [`MAX_BATCH`]), sends them as one
//! pipeline of `EVALSHA`s, in order, and turns each answer into what the store reports.

mod answers;

/// A record as Redis holds it, decoded (shared with the change feed).
pub(super) use answers::decode as decode_stored;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use futures::{channel::mpsc as fmpsc, SinkExt};
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Script, Value,
};
use rendezvous_discovery::{
    codec::{ErrorCode, ErrorResponse, RecordFormat},
    server::{rules::Limits, ServedFormats, MAX_SCANNED_PER_DISCOVER},
};
use tokio::sync::mpsc;

use crate::output::{HeldBack, Throttle, WARN_EVERY};

use super::{Command, Done, Job, KEY_PREFIX, MAX_BATCH, REAP_BATCH, REDIS_TIMEOUT};

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// One script: its code (the prelude in front) and its SHA1, for `EVALSHA`.
struct Lua {
    code: String,
    hash: String,
}

impl Lua {
    fn new(body: &str) -> Self {
        let code = format!("{PRELUDE}\n{body}");
        let hash = Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }
}

/// The five scripts.
struct Scripts {
    register: Lua,
    unregister: Lua,
    remove_peer: Lua,
    discover: Lua,
    reap: Lua,
}

impl Scripts {
    fn new() -> Self {
        Self {
            register: Lua::new(include_str!("lua/register.lua")),
            unregister: Lua::new(include_str!("lua/unregister.lua")),
            remove_peer: Lua::new(include_str!("lua/remove_peer.lua")),
            discover: Lua::new(include_str!("lua/discover.lua")),
            reap: Lua::new(include_str!("lua/reap.lua")),
        }
    }

    fn all(&self) -> [&Lua; 5] {
        [
            &self.register,
            &self.unregister,
            &self.remove_peer,
            &self.discover,
            &self.reap,
        ]
    }
}

struct Worker {
    client: redis::Client,
    /// The Redis URL without its password, for logs.
    redis: String,
    /// Scripts that fail (Redis out of memory, say) fail for every request: said once a minute.
    script_failures: Throttle,
    connection: Option<ConnectionManager>,
    owner: String,
    limits: Arc<Limits>,
    scripts: Scripts,
    /// Answers to send to the store once a batch is dealt with.
    answers: Vec<Done>,
}

/// Runs until the store is dropped (or the runtime stops). `redis` names the Redis in logs
/// (its URL without the password).
pub(super) async fn run(
    client: redis::Client,
    redis: String,
    owner: String,
    limits: Arc<Limits>,
    mut jobs: mpsc::Receiver<Job>,
    mut done: fmpsc::Sender<Done>,
    available: Arc<AtomicBool>,
) {
    let mut worker = Worker {
        client,
        redis: redis.clone(),
        script_failures: Throttle::new(WARN_EVERY),
        connection: None,
        owner,
        limits,
        scripts: Scripts::new(),
        answers: Vec::new(),
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // While Redis is down every batch fails (a reap each second at least): said once a
    // minute, with how many failures were not said, and once when Redis answers again.
    let mut failures = Throttle::new(WARN_EVERY);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let jobs = std::mem::take(&mut batch);
        match tokio::time::timeout(REDIS_TIMEOUT, worker.execute(&jobs)).await {
            Ok(Ok(values)) => {
                if !available.swap(true, Ordering::Relaxed) {
                    tracing::info!(%redis, "Redis answers again");
                    failures.reset();
                }
                for (job, value) in jobs.into_iter().zip(values) {
                    worker.answer(job, value);
                }
            }
            Ok(Err(error)) => {
                if let Some(held_back) = failures.allow(std::time::Instant::now()) {
                    tracing::warn!(
                        %redis,
                        %error,
                        operations = jobs.len(),
                        "Redis request failed; requests get E_UNAVAILABLE until it answers{}",
                        HeldBack(held_back)
                    );
                }
                available.store(false, Ordering::Relaxed);
                let text = format!("the registration store (Redis) failed: {error}; try again");
                worker.fail(jobs, &text);
            }
            Err(_) => {
                if let Some(held_back) = failures.allow(std::time::Instant::now()) {
                    tracing::warn!(
                        %redis,
                        operations = jobs.len(),
                        "Redis did not answer within {} s; requests get E_UNAVAILABLE until it \
                         answers{}",
                        REDIS_TIMEOUT.as_secs(),
                        HeldBack(held_back)
                    );
                }
                available.store(false, Ordering::Relaxed);
                // A half-used connection may answer late and out of step: start afresh.
                worker.connection = None;
                let text = format!(
                    "the registration store (Redis) did not answer within {} s; try again",
                    REDIS_TIMEOUT.as_secs()
                );
                worker.fail(jobs, &text);
            }
        }
        for answer in worker.answers.drain(..) {
            if done.send(answer).await.is_err() {
                // The store is gone: the server stopped.
                return;
            }
        }
    }
}

impl Worker {
    /// Sends `jobs` as one pipeline and returns one answer per job, in order. A job whose
    /// script Redis has forgotten (it restarted) is sent again after the scripts are loaded.
    async fn execute(&mut self, jobs: &[Job]) -> redis::RedisResult<Vec<Value>> {
        let mut connection = match &self.connection {
            Some(connection) => connection.clone(),
            None => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(REDIS_TIMEOUT))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1);
                let connection =
                    ConnectionManager::new_with_config(self.client.clone(), config).await?;
                self.connection = Some(connection.clone());
                connection
            }
        };
        let connection = &mut connection;
        let mut values = self
            .pipeline(jobs)
            .query_async::<Vec<Value>>(connection)
            .await?;
        if values.len() != jobs.len() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "Redis answered a different number of requests than were sent",
            )));
        }
        let missing: Vec<usize> = (0..values.len())
            .filter(|&i| matches!(&values[i], Value::ServerError(e) if e.code() == "NOSCRIPT"))
            .collect();
        if !missing.is_empty() {
            let mut load = redis::pipe();
            for script in self.scripts.all() {
                load.cmd("SCRIPT").arg("LOAD").arg(&script.code);
            }
            load.query_async::<Vec<Value>>(connection).await?;
            let again: Vec<&Job> = missing.iter().map(|&i| &jobs[i]).collect();
            let retried = self
                .pipeline_of(again)
                .query_async::<Vec<Value>>(connection)
                .await?;
            // A short answer leaves the rest NOSCRIPT: answered as a failed script.
            for (i, value) in missing.into_iter().zip(retried) {
                values[i] = value;
            }
        }
        Ok(values)
    }

    fn pipeline(&self, jobs: &[Job]) -> redis::Pipeline {
        self.pipeline_of(jobs.iter().collect())
    }

    fn pipeline_of(&self, jobs: Vec<&Job>) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for job in jobs {
            let (script, cmd) = self.invocation(job);
            pipe.cmd("EVALSHA").arg(&script.hash).arg(0).arg(KEY_PREFIX);
            for arg in cmd {
                pipe.arg(arg);
            }
        }
        pipe
    }

    /// The script for `job` and its arguments after the key prefix.
    fn invocation(&self, job: &Job) -> (&Lua, Vec<Vec<u8>>) {
        let limits = &self.limits;
        match job {
            Job::Reap => (
                &self.scripts.reap,
                vec![REAP_BATCH.to_string().into_bytes()],
            ),
            Job::Op { peer, command, .. } => {
                let peer = peer.to_base58().into_bytes();
                match command {
                    Command::Register {
                        namespace,
                        record,
                        ttl,
                    } => {
                        let envelope = record.envelope_bytes();
                        let bytes = answers::registration_bytes(namespace, record);
                        (
                            &self.scripts.register,
                            vec![
                                peer,
                                namespace.as_str().as_bytes().to_vec(),
                                envelope.to_vec(),
                                format_letter(record.format()).into(),
                                ttl.to_string().into_bytes(),
                                self.owner.clone().into_bytes(),
                                limits.max_registrations_per_peer().to_string().into_bytes(),
                                limits.max_registrations().to_string().into_bytes(),
                                limits.max_store_bytes().to_string().into_bytes(),
                                bytes.to_string().into_bytes(),
                            ],
                        )
                    }
                    Command::Unregister { namespace } => (
                        &self.scripts.unregister,
                        vec![peer, namespace.as_str().as_bytes().to_vec()],
                    ),
                    Command::RemovePeer => (
                        &self.scripts.remove_peer,
                        vec![peer, self.owner.clone().into_bytes()],
                    ),
                    Command::Discover {
                        namespace,
                        after,
                        limit,
                        served,
                        ..
                    } => (
                        &self.scripts.discover,
                        vec![
                            peer,
                            namespace
                                .as_ref()
                                .map_or(Vec::new(), |ns| ns.as_str().as_bytes().to_vec()),
                            if namespace.is_some() { "1" } else { "0" }.into(),
                            after.to_string().into_bytes(),
                            limit.to_string().into_bytes(),
                            MAX_SCANNED_PER_DISCOVER.to_string().into_bytes(),
                            served_letters(*served).into_bytes(),
                        ],
                    ),
                }
            }
        }
    }

    /// Answers every job of a batch that Redis did not answer.
    fn fail(&mut self, jobs: Vec<Job>, text: &str) {
        for job in jobs {
            let Job::Op { id, peer, command } = job else {
                self.answers.push(Done::Reaped { full: false });
                continue;
            };
            let outcome = command.refused(ErrorResponse::new(ErrorCode::Unavailable, text));
            self.answers.push(Done::Completed {
                id,
                peer,
                outcome,
                count: None,
            });
        }
    }
}

/// The letter `register.lua` stores for a record in `format`.
fn format_letter(format: RecordFormat) -> &'static str {
    match format {
        RecordFormat::Standard => "s",
        RecordFormat::Legacy => "l",
        RecordFormat::PeerInfo => "p",
    }
}

/// The letters of the formats `served` includes (the rule book's
/// [`ServedFormats::includes`]), for `discover.lua`'s filter.
fn served_letters(served: ServedFormats) -> String {
    [
        RecordFormat::Standard,
        RecordFormat::Legacy,
        RecordFormat::PeerInfo,
    ]
    .into_iter()
    .filter(|format| served.includes(*format))
    .map(format_letter)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_letters_served_are_the_formats_the_rule_book_includes() {
        assert_eq!(served_letters(ServedFormats::LegacyOnly), "l");
        assert_eq!(served_letters(ServedFormats::Standard), "s");
        assert_eq!(served_letters(ServedFormats::Signed), "sl");
        assert_eq!(served_letters(ServedFormats::AsPeerInfo), "slp");
        assert_eq!(served_letters(ServedFormats::All), "slp");
    }
}
