//! The XX handshake with libp2p's payloads: the initiator's first message is empty, the
//! responder's (second) and the initiator's (third) carry a `NoiseHandshakePayload` whose
//! identity key signs the sender's static noise key. Each side checks the other's before it
//! goes on: the initiator before it sends its own identity, the responder before the session
//! is handed to the muxer.

use futures::{future::poll_fn, AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::{identity, PeerId};
use prost::Message;

use super::{
    io::{Frames, Output},
    Error, Payload, STATIC_KEY_DOMAIN,
};

/// Room a handshake message needs beside its payload: an ephemeral key (32 bytes), an
/// encrypted static key (32 + 16) and the payload's tag (16).
const HANDSHAKE_OVERHEAD: usize = 96;

/// The responder's side: read the empty first message, send our identity, read and check the
/// initiator's.
pub(super) async fn respond<T>(
    mut io: T,
    mut state: snow::HandshakeState,
    payload: &[u8],
) -> Result<(PeerId, Output<T>), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut frames = Frames::default();
    if !receive(&mut io, &mut frames, &mut state).await?.is_empty() {
        return Err(Error::FirstPayload);
    }
    send(&mut io, &mut state, payload).await?;
    let theirs = receive(&mut io, &mut frames, &mut state).await?;
    let remote = authenticate(&state, &theirs)?;
    Ok((
        remote,
        Output::new(io, state.into_transport_mode()?, frames),
    ))
}

/// The initiator's side: send the empty first message, read and check the responder's
/// identity, send ours.
pub(super) async fn initiate<T>(
    mut io: T,
    mut state: snow::HandshakeState,
    payload: &[u8],
) -> Result<(PeerId, Output<T>), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut frames = Frames::default();
    send(&mut io, &mut state, &[]).await?;
    let theirs = receive(&mut io, &mut frames, &mut state).await?;
    let remote = authenticate(&state, &theirs)?;
    send(&mut io, &mut state, payload).await?;
    Ok((
        remote,
        Output::new(io, state.into_transport_mode()?, frames),
    ))
}

/// Writes the next handshake message, carrying `payload`, as one frame.
pub(super) async fn send<T: AsyncWrite + Unpin>(
    io: &mut T,
    state: &mut snow::HandshakeState,
    payload: &[u8],
) -> Result<(), Error> {
    let mut frame = vec![0; 2 + payload.len() + HANDSHAKE_OVERHEAD];
    let n = state.write_message(payload, &mut frame[2..])?;
    let len = u16::try_from(n).map_err(|_| snow::Error::Input)?;
    frame[..2].copy_from_slice(&len.to_be_bytes());
    frame.truncate(2 + n);
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Reads the next handshake message and returns its payload.
async fn receive<T: AsyncRead + Unpin>(
    io: &mut T,
    frames: &mut Frames,
    state: &mut snow::HandshakeState,
) -> Result<Vec<u8>, Error> {
    let frame = poll_fn(|cx| frames.poll_next(io, cx))
        .await?
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed during the noise handshake",
            )
        })?;
    let mut payload = vec![0; frame.len()];
    let n = state.read_message(frames.get(&frame), &mut payload)?;
    payload.truncate(n);
    frames.consume(frame);
    Ok(payload)
}

/// The remote's peer id, once its payload's identity key is found to sign the static noise
/// key the handshake has authenticated.
fn authenticate(state: &snow::HandshakeState, payload: &[u8]) -> Result<PeerId, Error> {
    let payload = Payload::decode(payload)?;
    let key = identity::PublicKey::try_decode_protobuf(&payload.identity_key)?;
    let noise_key = state.get_remote_static().ok_or(Error::BadSignature)?;
    if !key.verify(
        &[STATIC_KEY_DOMAIN, noise_key].concat(),
        &payload.identity_sig,
    ) {
        return Err(Error::BadSignature);
    }
    Ok(key.to_peer_id())
}
