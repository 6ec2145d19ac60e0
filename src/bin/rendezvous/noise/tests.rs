//! Our noise against itself and against libp2p-noise, in both roles, over real loopback TCP.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use futures::{future::poll_fn, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{
    core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
    identity::Keypair,
    tcp::tokio::TcpStream,
    PeerId,
};
use prost::Message;

use super::{handshake, io::Frames, Config, Error, Payload, Secret, PROTOCOL, X25519};

/// Two ends of a loopback TCP connection.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialed, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (TcpStream(dialed.unwrap()), TcpStream(accepted.unwrap().0))
}

/// Bytes that differ from one position to the next, `len` of them.
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `from` writes `len` bytes and flushes while `to` reads them; returns what `to` read.
async fn send(
    from: &mut (impl AsyncWrite + Unpin),
    to: &mut (impl AsyncRead + Unpin),
    sent: &[u8],
) -> Vec<u8> {
    let mut got = vec![0; sent.len()];
    let (written, read) = tokio::join!(
        async {
            from.write_all(sent).await?;
            from.flush().await
        },
        to.read_exact(&mut got)
    );
    written.unwrap();
    read.unwrap();
    got
}

/// Whole frames both ways, several of the largest size among them, arrive intact.
async fn exchange(
    a: &mut (impl AsyncRead + AsyncWrite + Unpin),
    b: &mut (impl AsyncRead + AsyncWrite + Unpin),
) {
    for len in [1, 100, 65_519, 65_520, 200_000] {
        let sent = data(len, 1);
        assert_eq!(send(a, b, &sent).await, sent, "{len} bytes from the dialer");
        let sent = data(len, 2);
        assert_eq!(send(b, a, &sent).await, sent, "{len} bytes to the dialer");
    }
}

/// `dialer` and `listener` (ours or libp2p-noise's) shake hands over loopback TCP, each learns
/// the other's peer id, and whole frames go both ways intact.
async fn handshake_and_exchange<D, L, DO, LO>(dialer: (Keypair, D), listener: (Keypair, L))
where
    D: OutboundConnectionUpgrade<TcpStream, Output = (PeerId, DO)>,
    L: InboundConnectionUpgrade<TcpStream, Output = (PeerId, LO)>,
    D::Error: std::fmt::Debug,
    L::Error: std::fmt::Debug,
    D::Info: From<&'static str>,
    L::Info: From<&'static str>,
    DO: AsyncRead + AsyncWrite + Unpin,
    LO: AsyncRead + AsyncWrite + Unpin,
{
    let ((dialer_key, dialer), (listener_key, listener)) = (dialer, listener);
    let (x, y) = pair().await;
    let (dialed, listened) = tokio::join!(
        dialer.upgrade_outbound(x, PROTOCOL.into()),
        listener.upgrade_inbound(y, PROTOCOL.into()),
    );
    let ((listener_seen, mut dialer), (dialer_seen, mut listener)) =
        (dialed.unwrap(), listened.unwrap());
    assert_eq!(listener_seen, listener_key.public().to_peer_id());
    assert_eq!(dialer_seen, dialer_key.public().to_peer_id());
    exchange(&mut dialer, &mut listener).await;
}

/// A fresh identity with our noise config.
fn ours() -> (Keypair, Config) {
    let key = Keypair::generate_ed25519();
    let config = Config::new(&key).unwrap();
    (key, config)
}

/// A fresh identity with libp2p-noise's config.
fn libp2p_noise() -> (Keypair, libp2p::noise::Config) {
    let key = Keypair::generate_ed25519();
    let config = libp2p::noise::Config::new(&key).unwrap();
    (key, config)
}

#[tokio::test]
async fn ours_to_ours() {
    handshake_and_exchange(ours(), ours()).await;
}

#[tokio::test]
async fn ours_listening_to_libp2p_noise() {
    handshake_and_exchange(libp2p_noise(), ours()).await;
}

#[tokio::test]
async fn ours_dialing_libp2p_noise() {
    handshake_and_exchange(ours(), libp2p_noise()).await;
}

/// A socket that reads and writes one byte at a time: every frame arrives, and leaves, in
/// pieces.
struct Trickle<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for Trickle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let end = buf.len().min(1);
        Pin::new(&mut self.0).poll_read(cx, &mut buf[..end])
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Trickle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let end = buf.len().min(1);
        Pin::new(&mut self.0).poll_write(cx, &buf[..end])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[tokio::test]
async fn frames_in_pieces() {
    let (x, y) = pair().await;
    let (dialer, listener) = tokio::join!(
        libp2p::noise::Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_outbound(x, "/noise"),
        Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_inbound(Trickle(y), PROTOCOL),
    );
    let ((_, mut dialer), (_, mut listener)) = (dialer.unwrap(), listener.unwrap());
    for len in [1, 3000] {
        let sent = data(len, 3);
        assert_eq!(send(&mut dialer, &mut listener, &sent).await, sent);
        assert_eq!(send(&mut listener, &mut dialer, &sent).await, sent);
    }
}

/// What issue 19 needs of it: a session that has carried traffic and waits for more holds
/// no buffer, on either side.
#[tokio::test]
async fn an_idle_session_holds_no_buffer() {
    let (x, y) = pair().await;
    let (dialer, listener) = tokio::join!(
        Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_outbound(x, PROTOCOL),
        Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_inbound(y, PROTOCOL),
    );
    let ((_, mut dialer), (_, mut listener)) = (dialer.unwrap(), listener.unwrap());
    exchange(&mut dialer, &mut listener).await;
    let mut byte = [0; 1];
    for session in [&mut dialer, &mut listener] {
        assert!(futures::poll!(session.read(&mut byte)).is_pending());
        assert_eq!(session.buffered(), 0);
    }
}

/// Dials with `payload` as the dialer's handshake payload; returns the listener's result.
async fn listener_result(payload: &[u8]) -> Result<PeerId, Error> {
    let dialer = Config::new(&Keypair::generate_ed25519()).unwrap();
    let (x, y) = pair().await;
    let (_, listener) = tokio::join!(
        handshake::initiate(x, dialer.handshake(true).unwrap(), payload),
        Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_inbound(y, PROTOCOL),
    );
    listener.map(|(peer, _)| peer)
}

#[tokio::test]
async fn an_identity_that_did_not_sign_the_noise_key_is_refused() {
    let dialer = Config::new(&Keypair::generate_ed25519()).unwrap();
    let mut forged = Payload::decode(&dialer.local.payload[..]).unwrap();
    forged.identity_key = Keypair::generate_ed25519().public().encode_protobuf();
    let forged = forged.encode_to_vec();
    let (x, y) = pair().await;
    let (_, listener) = tokio::join!(
        handshake::initiate(x, dialer.handshake(true).unwrap(), &forged),
        Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_inbound(y, PROTOCOL),
    );
    assert!(matches!(listener, Err(Error::BadSignature)), "{listener:?}");
}

#[tokio::test]
async fn a_payload_that_is_no_protobuf_is_refused() {
    let result = listener_result(&[0xff, 0xff, 0xff]).await;
    assert!(matches!(result, Err(Error::Payload(_))), "{result:?}");
}

#[tokio::test]
async fn a_first_message_with_a_payload_is_refused() {
    let dialer = Config::new(&Keypair::generate_ed25519()).unwrap();
    let (mut x, y) = pair().await;
    let mut state = dialer.handshake(true).unwrap();
    let (sent, listener) = tokio::join!(
        handshake::send(&mut x, &mut state, b"early data"),
        Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_inbound(y, PROTOCOL),
    );
    sent.unwrap();
    assert!(matches!(listener, Err(Error::FirstPayload)), "{listener:?}");
}

/// A socket whose writes are corrupted (the last byte of each flipped) once `armed`.
struct Tamper<T> {
    inner: T,
    armed: Arc<AtomicBool>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tamper<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tamper<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut bytes = buf.to_vec();
        if let (true, Some(last)) = (self.armed.load(Ordering::Relaxed), bytes.last_mut()) {
            *last ^= 1;
        }
        Pin::new(&mut self.inner).poll_write(cx, &bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[tokio::test]
async fn a_tampered_frame_is_an_error() {
    let armed = Arc::new(AtomicBool::new(false));
    let (x, y) = pair().await;
    let x = Tamper {
        inner: x,
        armed: armed.clone(),
    };
    let (dialer, listener) = tokio::join!(
        Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_outbound(x, PROTOCOL),
        Config::new(&Keypair::generate_ed25519())
            .unwrap()
            .upgrade_inbound(y, PROTOCOL),
    );
    let ((_, mut dialer), (_, mut listener)) = (dialer.unwrap(), listener.unwrap());
    let sent = data(500, 4);
    assert_eq!(send(&mut dialer, &mut listener, &sent).await, sent);
    armed.store(true, Ordering::Relaxed);
    dialer.write_all(&sent).await.unwrap();
    dialer.flush().await.unwrap();
    let mut got = vec![0; sent.len()];
    let error = listener.read_exact(&mut got).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
}

/// A socket that gives `bytes`, then nothing more, ever.
struct Stall(Vec<u8>);

impl AsyncRead for Stall {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.0.is_empty() {
            return Poll::Pending;
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Poll::Ready(Ok(n))
    }
}

#[tokio::test]
async fn a_frame_announced_large_holds_what_arrived_not_what_was_announced() {
    let mut frames = Frames::default();
    let mut socket = Stall(vec![0xff, 0xff, 1, 2, 3]);
    let polled = poll_fn(|cx| Poll::Ready(frames.poll_next(&mut socket, cx))).await;
    assert!(polled.is_pending());
    assert!(
        frames.capacity() <= 2 * 5 + 2048,
        "{} bytes held for 5 received",
        frames.capacity()
    );
}

#[tokio::test]
async fn a_connection_closed_within_a_frame_is_an_error() {
    let mut frames = Frames::default();
    let mut socket = futures::io::Cursor::new(vec![0, 10, 1, 2, 3]);
    let error = poll_fn(|cx| frames.poll_next(&mut socket, cx))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    let mut frames = Frames::default();
    let mut socket = futures::io::Cursor::new(Vec::new());
    assert_eq!(
        poll_fn(|cx| frames.poll_next(&mut socket, cx))
            .await
            .unwrap(),
        None
    );
}

fn hex(s: &str) -> [u8; 32] {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// RFC 7748, section 6.1: both public keys (our fixed-base multiplication) and the shared
/// secret from both sides (the ladder).
#[test]
fn x25519_matches_rfc_7748() {
    use snow::types::Dh;
    let alice_secret = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let bob_secret = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let alice_public = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let bob_public = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(Secret(alice_secret).public(), alice_public);
    assert_eq!(Secret(bob_secret).public(), bob_public);
    let (mut alice, mut bob) = (X25519::default(), X25519::default());
    alice.set(&alice_secret);
    bob.set(&bob_secret);
    assert_eq!(alice.pubkey(), alice_public);
    let (mut from_alice, mut from_bob) = ([0; 32], [0; 32]);
    alice.dh(&bob_public, &mut from_alice).unwrap();
    bob.dh(&alice_public, &mut from_bob).unwrap();
    assert_eq!(from_alice, shared);
    assert_eq!(from_bob, shared);
}

/// The static key's public key is taken from the config, and only for the static secret.
#[test]
fn the_known_static_key_is_used_only_for_its_secret() {
    use snow::types::Dh;
    let config = Config::new(&Keypair::generate_ed25519()).unwrap();
    let known = config.local.key.clone();
    let mut dh = X25519 {
        known: Some(known.clone()),
        ..X25519::default()
    };
    dh.set(&known.secret.0);
    assert_eq!(dh.pubkey(), known.public);
    assert_eq!(known.public, Secret(known.secret.0).public());
    let other = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    dh.set(&other);
    assert_eq!(
        dh.pubkey(),
        hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
}

/// A socket that reads `input`, then the end, and takes every write.
struct Scripted(futures::io::Cursor<Vec<u8>>);

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

proptest::proptest! {
    /// Whatever a dialer sends, framed or not, the listener's handshake ends in an error,
    /// without a panic: no bytes make a handshake without the dialer's keys.
    #[test]
    fn any_bytes_fail_the_handshake_cleanly(
        frames in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..4),
        raw in proptest::bool::ANY,
    ) {
        let input: Vec<u8> = if raw {
            frames.concat()
        } else {
            frames
                .iter()
                .flat_map(|f| (f.len() as u16).to_be_bytes().into_iter().chain(f.iter().copied()))
                .collect()
        };
        let config = Config::new(&Keypair::generate_ed25519()).unwrap();
        let state = config.handshake(false).unwrap();
        let result = futures::executor::block_on(handshake::respond(
            Scripted(futures::io::Cursor::new(input)),
            state,
            &config.local.payload,
        ));
        proptest::prop_assert!(result.is_err());
    }
}
