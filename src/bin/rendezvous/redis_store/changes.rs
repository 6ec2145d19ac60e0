//! The fleet's change feed: every instance subscribes to `rdv:changes`, on which the scripts
//! publish each REGISTER they store and each early removal, inside the script that makes the
//! change (so in sequence order, for the whole fleet). The store reports each as a
//! [`StoreEvent::Changed`](rendezvous_discovery::server::store::StoreEvent::Changed), so a
//! REGISTER through instance A reaches push subscribers on instance B.
//!
//! Pub/sub delivers only to a connected subscriber: when the subscription (re)starts, changes
//! published meanwhile are lost, so the feed reports [`Feed::Lost`] and the instance's push
//! subscriptions end (their subscribers resume with DISCOVER from their cookies).
//!
//! Messages (text header, then bytes): `r <seq> <ttl> <ns len>\n<ns><envelope>` for a
//! registration, `u <peer> <ns len>\n<ns>` for an UNREGISTER, `d <peer> <ns len>\n<ns>` for a
//! removal on disconnect.

use std::time::Duration;

use futures::{channel::mpsc as fmpsc, SinkExt, StreamExt};
use libp2p::PeerId;
use rendezvous_discovery::{
    codec::{Namespace, Registration},
    server::{store::Change, Removal},
};

use super::{worker::decode_stored, KEY_PREFIX};

/// How long to wait before subscribing again after the feed's connection failed.
pub const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// Changes waiting for the store's next poll, at most; while it is full the feed waits (Redis
/// buffers for it, up to its pub/sub output limit, past which it drops the connection: then the
/// feed reports [`Feed::Lost`]).
pub const MAX_QUEUED_CHANGES: usize = 4096;

/// What the feed reports.
#[derive(Debug)]
pub enum Feed {
    Change(Change),
    /// Changes may have been published while the feed was not subscribed.
    Lost,
}

/// The channel the scripts publish on.
pub fn channel() -> String {
    format!("{KEY_PREFIX}changes")
}

/// Subscribes to the change feed and forwards it to `feed` until the store is dropped.
pub async fn run(client: redis::Client, redis: String, mut feed: fmpsc::Sender<Feed>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(channel()).await {
                Ok(()) => {
                    tracing::debug!(%redis, "subscribed to the change feed");
                    if feed.send(Feed::Lost).await.is_err() {
                        return;
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(change) = parse(message.get_payload_bytes()) else {
                            tracing::warn!(%redis, "a change on the feed does not parse; skipped");
                            continue;
                        };
                        if feed.send(Feed::Change(change)).await.is_err() {
                            return;
                        }
                    }
                    tracing::debug!(%redis, "the change feed's connection closed");
                }
                Err(error) => {
                    tracing::debug!(%redis, %error, "cannot subscribe to the change feed")
                }
            },
            Err(error) => tracing::debug!(%redis, %error, "cannot connect the change feed"),
        }
        if feed.is_closed() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

/// One message of the feed, or `None` if it is not one the scripts publish.
pub fn parse(message: &[u8]) -> Option<Change> {
    let newline = message.iter().position(|b| *b == b'\n')?;
    let (header, body) = (
        std::str::from_utf8(&message[..newline]).ok()?,
        &message[newline + 1..],
    );
    let mut words = header.split(' ');
    let kind = words.next()?;
    let (first, second, ns_len) = (words.next()?, words.next()?, words.next());
    let (ns_len, rest): (usize, &[u8]) = match kind {
        "r" => (ns_len?.parse().ok()?, body),
        _ => (second.parse().ok()?, body),
    };
    let namespace =
        Namespace::new(std::str::from_utf8(rest.get(..ns_len)?).ok()?.to_owned()).ok()?;
    let after = &rest[ns_len..];
    match kind {
        "r" => {
            let seq: u64 = first.parse().ok()?;
            let ttl = second.parse().ok()?;
            let record = decode_stored(seq, after)?;
            Some(Change::Registered {
                seq,
                registration: Registration {
                    namespace,
                    record,
                    ttl,
                },
            })
        }
        "u" | "d" => Some(Change::Removed {
            peer: first.parse::<PeerId>().ok()?,
            namespaces: vec![namespace],
            cause: if kind == "u" {
                Removal::Unregister
            } else {
                Removal::Disconnect
            },
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use rendezvous_discovery::{RecordFormat, SignedRecord};

    use super::*;

    #[test]
    fn what_the_scripts_publish_parses() {
        let key = Keypair::generate_ed25519();
        let record = SignedRecord::new(
            &key,
            vec!["/ip4/10.0.0.1/tcp/1".parse().unwrap()],
            RecordFormat::Standard,
        )
        .unwrap();
        let mut message = b"r 42 7200 9\nchat room".to_vec();
        message.extend_from_slice(record.envelope_bytes());
        let Some(Change::Registered { seq, registration }) = parse(&message) else {
            panic!("a registration");
        };
        assert_eq!((seq, registration.ttl), (42, 7200));
        assert_eq!(registration.namespace.as_str(), "chat room");
        assert_eq!(registration.record.peer_id(), key.public().to_peer_id());

        let peer = key.public().to_peer_id();
        for (kind, cause) in [("u", Removal::Unregister), ("d", Removal::Disconnect)] {
            let message = format!("{kind} {peer} 4\nchat");
            let parsed = parse(message.as_bytes());
            assert_eq!(
                parsed,
                Some(Change::Removed {
                    peer,
                    namespaces: vec![Namespace::from_static("chat")],
                    cause,
                })
            );
        }
    }

    #[test]
    fn what_is_not_a_change_does_not_parse() {
        for message in [
            &b""[..],
            b"r 1 2\nx",
            b"x 1 2 3\nabc",
            b"u notapeer 4\nchat",
            b"r 1 2 99\nshort",
        ] {
            assert_eq!(parse(message), None, "{message:?}");
        }
    }
}
