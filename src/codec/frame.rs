//! Length-prefixed framing: an unsigned-varint length (prost's length-delimiter helpers) followed
//! by the message body, with a size cap.
//!
//! Reading never trusts the announced length with memory: a length over the cap is refused
//! before any body byte is read, and the body's buffer grows with the bytes that actually
//! arrive (see [`FRAME_READ_STEP`]), so a peer that announces the largest frame and then stalls
//! holds a few KiB, not the cap.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{DecodeError, Message};

/// The longest valid length prefix: an unsigned varint of a `u64` takes at most 10 bytes.
const MAX_PREFIX_LEN: usize = 10;

/// The first allocation for a frame body (or the frame's length, if smaller). After it the
/// buffer doubles only once it is full, so it never holds more than twice the bytes received
/// (or this step), whatever length the peer announced.
pub(crate) const FRAME_READ_STEP: usize = 4 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended inside a frame.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The length prefix announces more than the cap.
    #[error("message is {len} bytes; at most {max} allowed")]
    TooLarge {
        /// The announced or actual size.
        len: u64,
        /// The cap in force.
        max: usize,
    },
    /// The length prefix is not an unsigned varint of a `u64`: longer than 10 bytes, or its
    /// value overflows 64 bits.
    #[error("malformed length prefix; expected an unsigned varint of at most 10 bytes")]
    BadLength,
}

/// Reads one length-prefixed message body, at most `max_size` bytes.
///
/// Returns `Ok(None)` when the stream ends cleanly before the first byte of a frame, which is
/// how a peer says it has no more requests on this stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    max_size: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut body = Vec::new();
    Ok(read_frame_into(io, max_size, &mut body)
        .await?
        .then_some(body))
}

/// [`read_frame`] into a buffer the caller owns (so tests can watch it grow); `Ok(false)` on a
/// clean end of stream.
async fn read_frame_into<R: AsyncRead + Unpin>(
    io: &mut R,
    max_size: usize,
    body: &mut Vec<u8>,
) -> Result<bool, FrameError> {
    let Some(len) = read_length(io).await? else {
        return Ok(false);
    };
    if len > max_size as u64 {
        return Err(FrameError::TooLarge { len, max: max_size });
    }
    let len = usize::try_from(len).expect("at most max_size, a usize");
    read_body(io, len, body).await?;
    Ok(true)
}

/// Reads the varint length prefix one byte at a time (so no byte of the body is consumed);
/// `None` on a clean end of stream before the first byte.
async fn read_length<R: AsyncRead + Unpin>(io: &mut R) -> Result<Option<u64>, FrameError> {
    let mut prefix = [0u8; MAX_PREFIX_LEN];
    for i in 0..MAX_PREFIX_LEN {
        if io.read(&mut prefix[i..=i]).await? == 0 {
            if i == 0 {
                return Ok(None);
            }
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        if prefix[i] & 0x80 == 0 {
            // Rejects a tenth byte that would overflow 64 bits.
            let len =
                prost::decode_length_delimiter(&prefix[..=i]).map_err(|_| FrameError::BadLength)?;
            return Ok(Some(len as u64));
        }
    }
    Err(FrameError::BadLength)
}

/// Reads exactly `len` body bytes into `body`, growing it as they arrive.
async fn read_body<R: AsyncRead + Unpin>(
    io: &mut R,
    len: usize,
    body: &mut Vec<u8>,
) -> io::Result<()> {
    body.clear();
    let mut filled = 0;
    while filled < len {
        if filled == body.len() {
            let target = len.min(body.len().saturating_mul(2).max(FRAME_READ_STEP));
            body.reserve_exact(target - body.len());
            body.resize(target, 0);
        }
        let n = io.read(&mut body[filled..]).await?;
        if n == 0 {
            body.truncate(filled);
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
    }
    Ok(())
}

/// Writes one length-prefixed message body and flushes, refusing bodies over `max_size`.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    body: &[u8],
    max_size: usize,
) -> Result<(), FrameError> {
    let mut frame = Vec::with_capacity(prost::length_delimiter_len(body.len()) + body.len());
    append_frame(&mut frame, body, max_size)?;
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Appends one length-prefixed message body to `out`, refusing bodies over `max_size`: frames
/// gathered this way go out in one write and one flush (a push stream writes what its
/// subscriber has queued as one batch: one yamux frame and one noise message, not one each).
pub(crate) fn append_frame(
    out: &mut Vec<u8>,
    body: &[u8],
    max_size: usize,
) -> Result<(), FrameError> {
    if body.len() > max_size {
        return Err(FrameError::TooLarge {
            len: body.len() as u64,
            max: max_size,
        });
    }
    prost::encode_length_delimiter(body.len(), out).expect("a Vec grows as needed");
    out.extend_from_slice(body);
    Ok(())
}

/// Reads and decodes one message; `Ok(None)` on a clean end of stream.
pub async fn read_message<R: AsyncRead + Unpin>(
    io: &mut R,
    max_size: usize,
) -> Result<Option<Result<Message, DecodeError>>, FrameError> {
    Ok(read_frame(io, max_size)
        .await?
        .map(|body| Message::decode(&body)))
}

/// Encodes and writes one message.
pub async fn write_message<W: AsyncWrite + Unpin>(
    io: &mut W,
    message: &Message,
    max_size: usize,
) -> Result<(), FrameError> {
    write_frame(io, &message.encode(), max_size).await
}

#[cfg(test)]
mod tests {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use futures::{executor::block_on, FutureExt};

    use super::*;

    /// Yields `data` at most `chunk` bytes per read; once `stall_at` bytes are out, every read
    /// is pending forever (a peer that stopped sending); at the end of `data`, end of stream.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
        stall_at: usize,
    }

    impl Trickle {
        fn new(data: Vec<u8>, chunk: usize) -> Self {
            let stall_at = usize::MAX;
            Self {
                data,
                pos: 0,
                chunk,
                stall_at,
            }
        }

        fn stalling_at(mut self, at: usize) -> Self {
            self.stall_at = at;
            self
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            if self.pos >= self.stall_at {
                return Poll::Pending;
            }
            let end = self
                .data
                .len()
                .min(self.pos + self.chunk.min(buf.len()))
                .min(self.stall_at);
            let n = end - self.pos;
            buf[..n].copy_from_slice(&self.data[self.pos..end]);
            self.pos = end;
            Poll::Ready(Ok(n))
        }
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        block_on(write_frame(&mut buf, body, usize::MAX)).unwrap();
        buf
    }

    fn prefix_of(len: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        prost::encoding::encode_varint(len, &mut buf);
        buf
    }

    #[test]
    fn frames_round_trip_and_enforce_the_cap() {
        let buf = framed(&[7; 300]);
        assert_eq!(&buf[..2], [0xac, 0x02]);
        let mut two = buf.clone();
        two.extend_from_slice(&buf);
        let mut reader = &two[..];
        assert_eq!(
            block_on(read_frame(&mut reader, 1000)).unwrap(),
            Some(vec![7; 300])
        );
        assert_eq!(
            block_on(read_frame(&mut reader, 1000)).unwrap(),
            Some(vec![7; 300])
        );
        assert_eq!(block_on(read_frame(&mut reader, 1000)).unwrap(), None);
        assert!(matches!(
            block_on(read_frame(&mut &buf[..], 299)),
            Err(FrameError::TooLarge { len: 300, max: 299 })
        ));
        assert!(matches!(
            block_on(write_frame(&mut Vec::new(), &[0; 11], 10)),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        ));
    }

    #[test]
    fn given_a_frame_in_small_chunks_then_it_is_read_whole_and_its_buffer_stays_near_its_size() {
        let body: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        for chunk in [1, 7, 4096, 65_536] {
            let mut reader = Trickle::new(framed(&body), chunk);
            let mut buf = Vec::new();
            assert!(block_on(read_frame_into(&mut reader, 1 << 20, &mut buf)).unwrap());
            assert_eq!(buf, body, "chunk {chunk}");
            assert!(buf.capacity() <= body.len(), "chunk {chunk}");
        }
    }

    #[test]
    fn given_a_peer_that_announces_the_cap_and_stalls_then_the_buffer_holds_what_arrived() {
        let max = 1 << 20;
        let mut frame = prefix_of(max as u64);
        frame.extend(vec![1; max]);
        let prefix_len = frame.len() - max;
        for (arrived, bound) in [
            (0, FRAME_READ_STEP),
            (100, FRAME_READ_STEP),
            (FRAME_READ_STEP + 1, 2 * FRAME_READ_STEP),
            (50_000, 2 * 50_000),
        ] {
            let mut reader = Trickle::new(frame.clone(), 1000).stalling_at(prefix_len + arrived);
            let mut buf = Vec::new();
            assert!(read_frame_into(&mut reader, max, &mut buf)
                .now_or_never()
                .is_none());
            assert!(
                buf.capacity() <= bound && buf.capacity() >= arrived,
                "{arrived} bytes arrived; capacity {}",
                buf.capacity()
            );
        }
    }

    #[test]
    fn given_a_length_over_the_cap_then_it_is_refused_before_any_body_byte() {
        // The reader stalls right after the prefix: the refusal must not wait for the body.
        let announced = prefix_of(1001);
        let mut reader = Trickle::new(announced.clone(), 1).stalling_at(announced.len());
        let mut buf = Vec::new();
        let result = read_frame_into(&mut reader, 1000, &mut buf).now_or_never();
        assert!(matches!(
            result,
            Some(Err(FrameError::TooLarge {
                len: 1001,
                max: 1000
            }))
        ));
        assert_eq!(buf.capacity(), 0);
        // The largest u64 is a valid prefix, and far over any cap.
        assert!(matches!(
            block_on(read_frame(&mut &prefix_of(u64::MAX)[..], 1000)),
            Err(FrameError::TooLarge { len: u64::MAX, .. })
        ));
    }

    #[test]
    fn given_a_prefix_over_10_bytes_or_over_64_bits_then_it_is_malformed() {
        let mut eleven = vec![0x80; 10];
        eleven.push(0x01);
        let mut overflow = vec![0xff; 9];
        overflow.push(0x02);
        for prefix in [vec![0xff; 11], eleven, overflow] {
            assert!(
                matches!(
                    block_on(read_frame(&mut &prefix[..], usize::MAX)),
                    Err(FrameError::BadLength)
                ),
                "{prefix:02x?}"
            );
        }
    }

    #[test]
    fn given_a_stream_that_ends_inside_a_frame_then_it_is_an_io_error() {
        for cut in [&[0x85, 0x01][..1], &[0x05, 1, 2][..]] {
            assert!(matches!(
                block_on(read_frame(&mut &cut[..], 1000)),
                Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof
            ));
        }
    }
}
