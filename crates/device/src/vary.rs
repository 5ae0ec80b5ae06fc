//! `Vary: Origin` on the responses hyper writes itself.
//!
//! hyper answers a request head it cannot parse (400), one over its buffer (431) or a URI too
//! long (414) on its own, without calling the service, so the CORS layer never sees them and
//! hyper offers no hook to add a header. [`VaryOnOwnResponses`] wraps the connection's IO and
//! adds the header to those responses as they are written.
//!
//! Which bytes are hyper's own follows from when they are written. hyper parses the next
//! request head only once the previous response is complete, and it writes to the IO only when
//! it flushes, finishing with a flush of the IO. So the connection is in one of three states,
//! tracked by [`Turn`]: `IDLE` (no response of the service outstanding), `SERVING` (the service
//! was called; set by [`Tracked`]) and `FINISHING` (the service's response body was dropped,
//! so hyper has it all; its last bytes reach the IO before the next flush of the IO, which
//! makes the connection `IDLE` again). Bytes written while `IDLE` are hyper's own response: the
//! header goes after its status line.
//!
//! For this to hold, hyper's buffer must be empty whenever it flushes the IO, so writes are
//! always taken whole into a buffer here, drained to the connection as it accepts them, up to
//! [`MAX_PENDING`] bytes. (A client that stops reading for longer may get hyper's own answer
//! without the header; it is not reading it.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::https::HttpBody;

/// The most bytes held for a client that does not read, before writes wait.
pub(crate) const MAX_PENDING: usize = 64 * 1024;

/// The header line added to hyper's own responses.
const VARY_LINE: &[u8] = b"vary: Origin\r\n";

const IDLE: u8 = 0;
const SERVING: u8 = 1;
const FINISHING: u8 = 2;

/// Whose bytes the connection is writing: shared by [`Tracked`] and [`VaryOnOwnResponses`].
#[derive(Debug)]
pub(crate) struct Turn(AtomicU8);

impl Turn {
    /// A new connection: nothing served yet.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU8::new(IDLE)))
    }

    fn serving(&self) {
        self.0.store(SERVING, Ordering::SeqCst);
    }

    fn body_dropped(&self) {
        let _ = self
            .0
            .compare_exchange(SERVING, FINISHING, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn flushed(&self) {
        let _ = self
            .0
            .compare_exchange(FINISHING, IDLE, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn is_idle(&self) -> bool {
        self.0.load(Ordering::SeqCst) == IDLE
    }
}

/// The service side: marks the connection `SERVING` on each call and `FINISHING` once hyper
/// drops the response body.
#[derive(Clone, Debug)]
pub(crate) struct Tracked<S> {
    inner: S,
    turn: Arc<Turn>,
}

impl<S> Tracked<S> {
    /// `inner`, reporting to `turn`.
    pub(crate) fn new(inner: S, turn: Arc<Turn>) -> Self {
        Self { inner, turn }
    }
}

impl<S, RB> tower::Service<Request<RB>> for Tracked<S>
where
    S: tower::Service<Request<RB>, Response = Response<HttpBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<HttpBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<HttpBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RB>) -> Self::Future {
        self.turn.serving();
        let turn = self.turn.clone();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| {
                TrackedBody {
                    inner: body,
                    turn: Some(turn),
                }
                .boxed_unsync()
            }))
        })
    }
}

/// A response body that tells the [`Turn`] when hyper drops it.
struct TrackedBody {
    inner: HttpBody,
    turn: Option<Arc<Turn>>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(turn) = self.turn.take() {
            turn.body_dropped();
        }
    }
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::https::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where the wrapper is in a response hyper writes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Own {
    /// Nothing of it written yet.
    Start,
    /// Its status line is being written.
    StatusLine,
    /// The header is in (or the bytes were not a response: left alone).
    Done,
}

/// The connection's IO, adding `Vary: Origin` to hyper's own responses.
#[derive(Debug)]
pub(crate) struct VaryOnOwnResponses<T> {
    inner: T,
    turn: Arc<Turn>,
    pending: Vec<u8>,
    own: Own,
}

impl<T> VaryOnOwnResponses<T> {
    /// Wraps `inner`; `turn` is shared with the connection's [`Tracked`] service.
    pub(crate) fn new(inner: T, turn: Arc<Turn>) -> Self {
        Self {
            inner,
            turn,
            pending: Vec::new(),
            own: Own::Start,
        }
    }

    /// Takes `buf` as hyper's own bytes: the status line, then the header, then the rest.
    fn take_own(&mut self, mut buf: &[u8]) {
        if self.own == Own::Start {
            self.own = if buf.starts_with(b"HTTP/1.") {
                Own::StatusLine
            } else {
                Own::Done
            };
        }
        if self.own == Own::StatusLine {
            if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                self.pending.extend_from_slice(&buf[..=end]);
                self.pending.extend_from_slice(VARY_LINE);
                buf = &buf[end + 1..];
                self.own = Own::Done;
            }
        }
        self.pending.extend_from_slice(buf);
    }
}

impl<T: AsyncWrite + Unpin> VaryOnOwnResponses<T> {
    /// Writes what is pending to the connection, as far as it accepts.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for VaryOnOwnResponses<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for VaryOnOwnResponses<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        if this.pending.len() >= MAX_PENDING {
            // poll_drain registered the waker with the connection.
            return Poll::Pending;
        }
        if this.turn.is_idle() {
            this.take_own(buf);
        } else {
            this.own = Own::Start;
            this.pending.extend_from_slice(buf);
        }
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes the IO only with its own buffer empty: whatever the service's
        // response had left is in `pending` now.
        self.turn.flushed();
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn written(turn: &Arc<Turn>, steps: &[Step]) -> String {
        let mut io = VaryOnOwnResponses::new(Vec::new(), turn.clone());
        for step in steps {
            match step {
                Step::Write(bytes) => io.write_all(bytes).await.unwrap(),
                Step::Flush => io.flush().await.unwrap(),
                Step::Serve => turn.serving(),
                Step::DropBody => turn.body_dropped(),
            }
        }
        String::from_utf8(io.inner).unwrap()
    }

    enum Step {
        Write(&'static [u8]),
        Flush,
        Serve,
        DropBody,
    }
    use Step::{DropBody, Flush, Serve, Write};

    #[tokio::test]
    async fn hypers_own_answer_gets_the_header_after_its_status_line_even_split() {
        let turn = Turn::new();
        let out = written(
            &turn,
            &[
                Write(b"HTTP/1.1 400 Bad"),
                Write(b" Request\r\ncontent-length: 0\r\n\r\n"),
                Flush,
            ],
        )
        .await;
        assert_eq!(
            out,
            "HTTP/1.1 400 Bad Request\r\nvary: Origin\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn the_services_answers_pass_untouched_until_flushed_after_the_body() {
        let turn = Turn::new();
        let answer = b"HTTP/1.1 200 OK\r\nvary: Origin\r\n\r\n";
        let out = written(
            &turn,
            &[
                Serve,
                Write(answer),
                Flush,
                DropBody,
                // The answer's last bytes, written after the body is gone but before the flush.
                Write(b"HTTP/1.1 200 tail"),
                Flush,
                Write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"),
            ],
        )
        .await;
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nvary: Origin\r\n\r\nHTTP/1.1 200 tail\
             HTTP/1.1 431 Request Header Fields Too Large\r\nvary: Origin\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn bytes_that_are_not_a_response_are_left_alone() {
        let out = written(&Turn::new(), &[Write(b"\x15\x03\x03 not http\r\n")]).await;
        assert_eq!(out, "\x15\x03\x03 not http\r\n");
    }
}
