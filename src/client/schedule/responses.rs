//! Responses in: what the outcome of each request (REGISTER, UNREGISTER, DISCOVER) changes in
//! the jobs (registrations held, retries with backoff, cookies and paging, the cache) and which
//! events it reports.

use std::time::Instant;

use super::{
    request::{unexpected, Done, Origin},
    retry, Request, Schedule,
};
use crate::{
    client::{handler::Response, Event, RequestError, RequestId, MAX_REQUEST_RETRIES},
    codec::ErrorCode,
    Namespace, RecordFormat, Ttl,
};

impl Schedule {
    /// The outcome of request `id`.
    pub(crate) fn on_response(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<Response, RequestError>,
    ) {
        let Some(server) = self.requests.get(id).map(|f| f.server) else {
            return;
        };
        self.window.ended(server, id);
        if let Err(error) = &result {
            if self.retry_later(now, id, error) {
                return;
            }
        }
        let Some(flight) = self.requests.end(id) else {
            return;
        };
        let done = Done {
            id,
            server: flight.server,
            origin: flight.origin,
            stopping: self.stop.ended(id),
        };
        match flight.request {
            Request::Register {
                namespace,
                ttl,
                format,
            } => {
                let result = result.and_then(|r| match r {
                    Response::Registered(granted) => Ok(granted),
                    other => Err(unexpected(other, "REGISTER")),
                });
                self.on_register(now, done, namespace, ttl, format, result);
            }
            Request::Unregister { namespace } => self.on_unregister(done, namespace, result),
            Request::Discover {
                namespace,
                cookie,
                limit,
            } => self.on_discover(now, done, namespace, cookie.is_some(), limit, result),
        }
        self.sync_pause(done.server);
        self.check_stopped();
    }

    /// Sends request `id` again after a short backoff if `error` refused it for a passing
    /// reason ([`retry::is_passing`]) and it has retries left; returns whether it will be. A
    /// REGISTER that a format fallback retries at once, and after stop anything but the stop's
    /// own UNREGISTERs, are not retried here.
    fn retry_later(&mut self, now: Instant, id: RequestId, error: &RequestError) -> bool {
        let Some(flight) = self.requests.get(id) else {
            return false;
        };
        let server = flight.server;
        let wanted = retry::is_passing(error)
            && flight.retries < MAX_REQUEST_RETRIES
            && self.servers.is_connected(&server)
            && (!self.stop.is_stopped() || flight.origin == Origin::Stop);
        let falls_back = match &flight.request {
            Request::Register { format, .. } => {
                self.regs.fallback_for(&server, *format, error).is_some()
            }
            _ => false,
        };
        if !wanted || falls_back {
            return false;
        }
        let Some(before) = self.requests.count_retry(id) else {
            return false;
        };
        let at = now + self.backoff.retry(before + 1);
        tracing::debug!(%server, %id, %error, retry = before + 1, "request refused for now; sending it again");
        self.retries.schedule(id, server, at);
        true
    }

    fn on_register(
        &mut self,
        now: Instant,
        done: Done,
        namespace: Namespace,
        ttl: Option<Ttl>,
        format: RecordFormat,
        result: Result<Ttl, RequestError>,
    ) {
        if self.stop.is_stopped() {
            return self.on_register_while_stopped(done, namespace, result);
        }
        let error = match result {
            Ok(granted) => {
                self.regs.took(done.server, format);
                return self.on_registered(now, done, namespace, granted);
            }
            Err(error) => error,
        };
        let server = done.server;
        if !self.servers.contains(&server) {
            return;
        }
        let connected = self.servers.is_connected(&server);
        if connected && self.regs.fall_back(server, format, &error) {
            if done.origin == Origin::Auto {
                self.regs.retry_now(now, server, &namespace);
            } else {
                let format = self.regs.format(&server);
                let retry = Request::Register {
                    namespace,
                    ttl,
                    format,
                };
                self.manual.push_front(server, done.id, retry);
            }
            return;
        }
        if done.origin == Origin::Auto {
            let failures = self.regs.next_failure(&server, &namespace);
            let retry_at = connected.then_some(now + self.backoff.after(failures));
            self.regs.failed(server, &namespace, failures, retry_at);
        }
        self.report(done.register_failed(namespace, error));
    }

    fn on_registered(&mut self, now: Instant, done: Done, namespace: Namespace, granted: Ttl) {
        let refresh = self.backoff.refresh(granted);
        if !self.servers.contains(&done.server) {
            return;
        }
        self.regs.hold(done.server, namespace.clone());
        if done.origin == Origin::Auto {
            let connected = self.servers.is_connected(&done.server);
            self.regs
                .registered(now, done.server, &namespace, refresh, connected);
        }
        self.report(done.registered(namespace, granted));
    }

    /// After stop a REGISTER that still succeeds is undone if `Stopped` waits for it.
    fn on_register_while_stopped(
        &mut self,
        done: Done,
        namespace: Namespace,
        result: Result<Ttl, RequestError>,
    ) {
        match result {
            Err(error) => self.report(done.register_failed(namespace, error)),
            Ok(ttl) => {
                self.report(done.registered(namespace.clone(), ttl));
                if done.stopping {
                    self.regs.hold(done.server, namespace.clone());
                    self.send_stop_unregister(done.server, namespace);
                }
            }
        }
    }

    fn on_unregister(
        &mut self,
        done: Done,
        namespace: Namespace,
        result: Result<Response, RequestError>,
    ) {
        match result {
            Ok(_) => {
                self.regs.release(done.server, &namespace);
                self.report(done.unregistered(namespace));
            }
            Err(error) => self.report(done.unregister_failed(namespace, error)),
        }
    }

    fn on_discover(
        &mut self,
        now: Instant,
        done: Done,
        namespace: Option<Namespace>,
        had_cookie: bool,
        limit: Option<u64>,
        result: Result<Response, RequestError>,
    ) {
        if self.stop.is_stopped() && done.origin == Origin::Auto {
            return;
        }
        let page = match result.and_then(|r| match r {
            Response::Page(page) => Ok(page),
            other => Err(unexpected(other, "DISCOVER")),
        }) {
            Ok(page) => page,
            Err(error) => return self.on_discover_failed(now, done, namespace, had_cookie, error),
        };
        let server = done.server;
        let found = self
            .cache
            .absorb(now, server, namespace.as_ref(), &page.registrations);
        self.out.extend(found);
        if page.skipped > 0 {
            tracing::debug!(%server, skipped = page.skipped, "undecodable entries left out of a page");
            self.report(Event::RecordsSkipped {
                server,
                namespace: namespace.clone(),
                count: page.skipped,
            });
        }
        if done.origin == Origin::Manual {
            return self.report(Event::DiscoverCompleted {
                server,
                namespace,
                registrations: page.registrations,
                skipped: page.skipped,
                cookie: page.cookie,
                request: done.id,
            });
        }
        let Some(namespace) = namespace else { return };
        self.report(Event::DiscoverPolled {
            server,
            namespace: namespace.clone(),
            registrations: page.registrations.len(),
        });
        let entries = (page.registrations.len() + page.skipped) as u64;
        let full = limit.is_some_and(|l| entries >= l);
        let connected = self.servers.is_connected(&server);
        self.discs
            .page(now, server, &namespace, full, page.cookie, connected);
    }

    fn on_discover_failed(
        &mut self,
        now: Instant,
        done: Done,
        namespace: Option<Namespace>,
        had_cookie: bool,
        error: RequestError,
    ) {
        let report = match (&namespace, done.origin) {
            (Some(ns), Origin::Auto) => {
                let failures = self.discs.next_failure(&done.server, ns);
                let invalid_cookie = had_cookie
                    && matches!(&error, RequestError::Remote(e) if e.code == ErrorCode::InvalidCookie);
                let delay = self.backoff.after(failures);
                let retry_at = if invalid_cookie { now } else { now + delay };
                let retry_at = self.servers.is_connected(&done.server).then_some(retry_at);
                match self
                    .discs
                    .failed(done.server, ns, failures, invalid_cookie, retry_at)
                {
                    None => false,
                    Some(true) => {
                        self.report(Event::CookieReset {
                            server: done.server,
                            namespace: ns.clone(),
                        });
                        false
                    }
                    Some(false) => true,
                }
            }
            (None, Origin::Auto) => false,
            _ => true,
        };
        if report {
            self.report(done.discover_failed(namespace, error));
        }
    }
}
