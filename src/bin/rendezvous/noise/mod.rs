//! libp2p's noise security (`/noise`: the XX handshake and the framing of the libp2p noise
//! spec, <https://github.com/libp2p/specs/blob/master/noise/README.md>), written so that a
//! connection holds no buffer while it is idle.
//!
//! libp2p-noise 0.47 keeps two 8 KiB framing buffers, and the largest frame it has sent, for
//! a connection's whole life: 16 to 18 KiB of the 34 KiB an idle connection costs a server
//! (BENCHMARKS.md, "Connections and bursts"), and neither crate lets a user release them.
//! Here every buffer exists only while bytes are in flight: the read buffer is released when
//! the socket has nothing more to read, the write buffers after each flush. The cryptography
//! is the same: snow's handshake with ring's ChaCha20-Poly1305 and SHA-256 (the crates and
//! features libp2p-noise uses) and curve25519-dalek's X25519 (which x25519-dalek, libp2p-noise's,
//! wraps). Two multiplications of the five a responder did are gone: the static public key is
//! computed once per [`Config`], not once per handshake, and a fresh ephemeral key's public key
//! is a fixed-base multiplication (precomputed tables) rather than a Montgomery ladder. What
//! is ours is the framing (a
//! two-byte big-endian length before each noise message) and the libp2p handshake payload
//! (the identity key and its signature of the static noise key).
//!
//! It speaks to every libp2p noise: the tests here run it against libp2p-noise in both roles,
//! the swarm tests against rust-libp2p peers, and interop/ against js-libp2p and py-libp2p.
//! Not supported, as in libp2p-noise: a prologue, and the WebTransport certhashes and stream
//! muxer extensions (a remote's extensions are ignored).

mod handshake;
mod io;

use std::{future::Future, pin::Pin, sync::Arc};

use curve25519_dalek::MontgomeryPoint;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::{
    core::{
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
        UpgradeInfo,
    },
    identity::{self, Keypair},
    PeerId,
};
use prost::Message;
use rand::RngCore;
use snow::{
    params::{CipherChoice, DHChoice, HashChoice, NoiseParams},
    resolvers::{CryptoResolver, RingResolver},
};
use zeroize::Zeroize;

pub use io::Output;

/// The protocol id of libp2p's noise.
const PROTOCOL: &str = "/noise";

/// What the remote's identity key signs, followed by its static noise key.
const STATIC_KEY_DOMAIN: &[u8] = b"noise-libp2p-static-key:";

/// The one noise protocol libp2p speaks.
const PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";

/// Why a noise handshake failed, or a noise session broke.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed or closed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A message did not decrypt, or the handshake went out of order.
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    /// The remote's handshake payload is not a `NoiseHandshakePayload`.
    #[error("the remote's noise handshake payload is not a NoiseHandshakePayload: {0}")]
    Payload(#[from] prost::DecodeError),
    /// The remote's identity key cannot be decoded.
    #[error("the remote's identity key cannot be decoded: {0}")]
    Key(#[from] identity::DecodingError),
    /// The remote's identity key did not sign its static noise key.
    #[error("the remote's identity key did not sign its static noise key")]
    BadSignature,
    /// The first handshake message carried a payload (libp2p's is empty).
    #[error("the first noise handshake message carries a payload; libp2p's is empty")]
    FirstPayload,
    /// Our identity key could not sign our static noise key.
    #[error("cannot sign the static noise key: {0}")]
    Signing(#[from] identity::SigningError),
}

/// A handshake in progress: the remote's peer id and the session, once it is done.
type Upgrade<T> = Pin<Box<dyn Future<Output = Result<(PeerId, Output<T>), Error>> + Send>>;

/// The noise upgrade of a transport: `transport.upgrade(..).authenticate(Config::new(&key)?)`,
/// as with libp2p-noise's `Config`.
#[derive(Clone)]
pub struct Config {
    local: Arc<Local>,
}

/// What every handshake of one identity uses: its static noise key and its handshake payload.
struct Local {
    /// The static X25519 key pair (its secret zeroed on drop).
    key: StaticKey,
    /// `PARAMS`, parsed once.
    params: NoiseParams,
    /// Our `NoiseHandshakePayload`, encoded: our identity key and its signature of our
    /// static noise key.
    payload: Vec<u8>,
}

impl Config {
    /// A fresh static noise key for `identity`, signed by it.
    pub fn new(identity: &Keypair) -> Result<Self, Error> {
        let mut secret = Secret([0; 32]);
        rand::rngs::OsRng.fill_bytes(&mut secret.0);
        let public = secret.public();
        let key = StaticKey { secret, public };
        let signature = identity.sign(&[STATIC_KEY_DOMAIN, &public].concat())?;
        let payload = Payload {
            identity_key: identity.public().encode_protobuf(),
            identity_sig: signature,
            extensions: None,
        }
        .encode_to_vec();
        let params = PARAMS.parse().expect("libp2p's noise parameters parse");
        Ok(Self {
            local: Arc::new(Local {
                key,
                params,
                payload,
            }),
        })
    }

    /// The handshake over `socket`, as its dialer (`initiator`) or its listener.
    fn upgrade<T>(self, socket: T, initiator: bool) -> Upgrade<T>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        async move {
            let state = self.handshake(initiator)?;
            let payload = &self.local.payload;
            if initiator {
                handshake::initiate(socket, state, payload).await
            } else {
                handshake::respond(socket, state, payload).await
            }
        }
        .boxed()
    }

    /// A handshake in the given role, with our static key.
    fn handshake(&self, initiator: bool) -> Result<snow::HandshakeState, Error> {
        let resolver = Resolver {
            known: self.local.key.clone(),
        };
        let builder = snow::Builder::with_resolver(self.local.params.clone(), Box::new(resolver))
            .local_private_key(&self.local.key.secret.0)?;
        Ok(if initiator {
            builder.build_initiator()?
        } else {
            builder.build_responder()?
        })
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<T> InboundConnectionUpgrade<T> for Config
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, Output<T>);
    type Error = Error;
    type Future = Upgrade<T>;

    fn upgrade_inbound(self, socket: T, _: Self::Info) -> Self::Future {
        self.upgrade(socket, false)
    }
}

impl<T> OutboundConnectionUpgrade<T> for Config
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, Output<T>);
    type Error = Error;
    type Future = Upgrade<T>;

    fn upgrade_outbound(self, socket: T, _: Self::Info) -> Self::Future {
        self.upgrade(socket, true)
    }
}

/// libp2p's `NoiseHandshakePayload` (libp2p-noise's `payload.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(bytes = "vec", tag = "1")]
    identity_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    identity_sig: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    extensions: Option<Extensions>,
}

/// libp2p's `NoiseExtensions`: read (a remote may send them) and ignored.
#[derive(Clone, PartialEq, prost::Message)]
struct Extensions {
    #[prost(bytes = "vec", repeated, tag = "1")]
    webtransport_certhashes: Vec<Vec<u8>>,
    #[prost(string, repeated, tag = "2")]
    stream_muxers: Vec<String>,
}

/// An X25519 secret key, zeroed when dropped.
#[derive(Clone, Default)]
struct Secret([u8; 32]);

impl Secret {
    /// The public key: a fixed-base multiplication with curve25519-dalek's precomputed tables,
    /// several times cheaper than the Montgomery ladder of `x25519(secret, basepoint)` that
    /// libp2p-noise uses for it (the ladder is for the other party's point, in `dh`).
    fn public(&self) -> [u8; 32] {
        MontgomeryPoint::mul_base_clamped(self.0).to_bytes()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// snow's primitives for libp2p's noise: ring's hash and cipher (as libp2p-noise), X25519 from
/// curve25519-dalek, the operating system's random numbers; and our static key pair, so that
/// a handshake does not compute the static public key again.
struct Resolver {
    known: StaticKey,
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(OsRandom))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        matches!(choice, DHChoice::Curve25519).then(|| {
            Box::new(X25519 {
                known: Some(self.known.clone()),
                ..X25519::default()
            }) as _
        })
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn snow::types::Hash>> {
        RingResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn snow::types::Cipher>> {
        RingResolver.resolve_cipher(choice)
    }
}

/// The operating system's random numbers, for the ephemeral keys.
struct OsRandom;

impl snow::types::Random for OsRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        rand::rngs::OsRng
            .try_fill_bytes(dest)
            .map_err(|_| snow::Error::Rng)
    }
}

/// Our static key pair, computed once per [`Config`].
#[derive(Clone)]
struct StaticKey {
    secret: Secret,
    public: [u8; 32],
}

/// An X25519 key pair for snow.
#[derive(Default)]
struct X25519 {
    secret: Secret,
    public: [u8; 32],
    /// Our static key pair: when snow sets this secret (every handshake does, for the static
    /// key), its public key is taken from here instead of computed.
    known: Option<StaticKey>,
}

impl snow::types::Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, secret: &[u8]) {
        self.secret.0.copy_from_slice(&secret[..32]);
        self.public = match &self.known {
            Some(known) if same(&known.secret.0, &self.secret.0) => known.public,
            _ => self.secret.public(),
        };
    }

    fn generate(&mut self, rng: &mut dyn snow::types::Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut self.secret.0)?;
        self.public = self.secret.public();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.secret.0
    }

    fn dh(&self, public: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let public: [u8; 32] = public
            .get(..32)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        out[..32].copy_from_slice(
            &MontgomeryPoint(public)
                .mul_clamped(self.secret.0)
                .to_bytes(),
        );
        Ok(())
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
