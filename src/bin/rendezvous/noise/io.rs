//! Noise frames on a socket, and the session that reads and writes through them. Each noise
//! message goes in a frame: its length as two big-endian bytes, then the message. No buffer
//! outlives the bytes in it: an idle session holds none.

use std::{
    fmt, io,
    ops::Range,
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};

/// The largest noise message (the noise spec's limit).
const MAX_MESSAGE: usize = 65535;

/// A message's authentication tag (ChaCha20-Poly1305).
const TAG: usize = 16;

/// The most plaintext one transport message carries.
const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG;

/// The fewest bytes asked of the socket at a time: enough for a few small frames in one read
/// (a request and its yamux frames), little to zero beforehand. Beyond it a read asks for at
/// most as much as is buffered already: the buffer grows with what arrives, not with what a
/// frame's length announces, so a peer that announces a large frame and sends little makes us
/// hold little.
const READ_AHEAD: usize = 2048;

/// Frames read from a socket: the bytes received and not yet taken, the next frame's start
/// at `start`. Empty, it holds no allocation.
#[derive(Default)]
pub(super) struct Frames {
    buf: Vec<u8>,
    start: usize,
}

impl Frames {
    /// The range in this buffer of the next whole frame's message, reading from `io` until
    /// one is here; `None` when the socket closed between two frames.
    pub(super) fn poll_next<T: AsyncRead + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<Range<usize>>>> {
        loop {
            let here = &self.buf[self.start..];
            let missing = match here {
                [a, b, message @ ..] => {
                    let len = usize::from(u16::from_be_bytes([*a, *b]));
                    if message.len() >= len {
                        let from = self.start + 2;
                        return Poll::Ready(Ok(Some(from..from + len)));
                    }
                    len - message.len()
                }
                _ => 2 - here.len(),
            };
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let filled = self.buf.len();
            self.buf.resize(
                filled + missing.clamp(READ_AHEAD, READ_AHEAD.max(filled)),
                0,
            );
            let read = Pin::new(&mut *io).poll_read(cx, &mut self.buf[filled..]);
            let n = match read {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => {
                    self.buf.truncate(filled);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    self.buf.truncate(filled);
                    if filled == 0 {
                        // Nothing arrived and nothing is waiting: hold no memory until
                        // something does.
                        self.buf = Vec::new();
                    } else {
                        // Part of a frame waits for the rest: hold room for about what came.
                        self.buf.shrink_to(2 * filled + READ_AHEAD);
                    }
                    return Poll::Pending;
                }
            };
            self.buf.truncate(filled + n);
            if n == 0 {
                if filled == 0 {
                    self.buf = Vec::new();
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed in the middle of a noise frame",
                )));
            }
        }
    }

    /// The bytes of `range`, a frame `poll_next` returned.
    pub(super) fn get(&self, range: &Range<usize>) -> &[u8] {
        &self.buf[range.clone()]
    }

    /// Takes the frame `poll_next` returned out of the buffer.
    pub(super) fn consume(&mut self, frame: Range<usize>) {
        self.start = frame.end;
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// The bytes this holds room for (tests: an idle session holds none).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// A noise session to a remote over `T`: what is written is encrypted into frames (one per
/// flush, or per 65,519 bytes), what is read is decrypted from them.
pub struct Output<T> {
    io: T,
    session: snow::TransportState,
    /// Frames received and not yet decrypted.
    frames: Frames,
    /// A decrypted message, read up to `read`.
    plaintext: Vec<u8>,
    read: usize,
    /// What was written and not yet encrypted (at most `MAX_PLAINTEXT` bytes).
    pending: Vec<u8>,
    /// Encrypted frames, written to `io` up to `written`.
    outgoing: Vec<u8>,
    written: usize,
}

impl<T> fmt::Debug for Output<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("noise::Output").finish_non_exhaustive()
    }
}

impl<T> Output<T> {
    /// The session after a handshake, with the frames that arrived behind the handshake's last.
    pub(super) fn new(io: T, session: snow::TransportState, frames: Frames) -> Self {
        Self {
            io,
            session,
            frames,
            plaintext: Vec::new(),
            read: 0,
            pending: Vec::new(),
            outgoing: Vec::new(),
            written: 0,
        }
    }

    /// Encrypts what is pending into a frame behind the outgoing ones.
    fn seal(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.outgoing.len();
        self.outgoing.resize(at + 2 + self.pending.len() + TAG, 0);
        let n = self
            .session
            .write_message(&self.pending, &mut self.outgoing[at + 2..])
            .map_err(invalid)?;
        let len = u16::try_from(n).map_err(|_| invalid(snow::Error::Input))?;
        self.outgoing[at..at + 2].copy_from_slice(&len.to_be_bytes());
        self.outgoing.truncate(at + 2 + n);
        self.pending.clear();
        Ok(())
    }

    /// The bytes this holds room for, in every buffer (tests: an idle session holds none).
    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.frames.capacity()
            + self.plaintext.capacity()
            + self.pending.capacity()
            + self.outgoing.capacity()
    }
}

impl<T: AsyncWrite + Unpin> Output<T> {
    /// Writes the outgoing frames to the socket.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.outgoing.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Output<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.read < this.plaintext.len() {
                let n = buf.len().min(this.plaintext.len() - this.read);
                buf[..n].copy_from_slice(&this.plaintext[this.read..this.read + n]);
                this.read += n;
                if this.read == this.plaintext.len() {
                    this.plaintext.clear();
                    this.read = 0;
                }
                return Poll::Ready(Ok(n));
            }
            let frame = match this.frames.poll_next(&mut this.io, cx) {
                Poll::Pending => {
                    // Idle until the remote writes again: keep no room for it.
                    this.plaintext = Vec::new();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(Some(frame))) => frame,
                Poll::Ready(Ok(None)) => {
                    this.plaintext = Vec::new();
                    return Poll::Ready(Ok(0));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            };
            this.plaintext.resize(frame.len(), 0);
            let n = this
                .session
                .read_message(this.frames.get(&frame), &mut this.plaintext)
                .map_err(invalid)?;
            this.plaintext.truncate(n);
            this.frames.consume(frame);
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Output<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() == MAX_PLAINTEXT {
            // A full frame: the ones before it go out first, so at most two are held.
            ready!(this.poll_send(cx))?;
            this.seal()?;
        }
        let n = buf.len().min(MAX_PLAINTEXT - this.pending.len());
        this.pending.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.seal()?;
        ready!(this.poll_send(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        // Sent: keep no room for the next write until there is one.
        this.pending = Vec::new();
        this.outgoing = Vec::new();
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut *this).poll_flush(cx))?;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

/// A noise error as the I/O error a session's reader or writer returns.
fn invalid(e: snow::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
