//! pinproxy's own HTTP/1.1 client, for the pinned upstream connections of the
//! pool: the request's task writes the request head straight from its
//! `HeaderMap` and reads the response head into one, with no dispatch channel
//! or connection state machine between them as hyper's client has. Measured
//! against hyper's client in docs/benchmark.md, eleventh round: it was the
//! largest single cost above the floor.
//!
//! It speaks to one kind of peer, a server whose certificate matched a pin,
//! and trusts it no further than that: every response head is read strictly
//! (`head.rs`), a chunked body is decoded under bounds (`chunked.rs`), and a
//! connection whose last response was framed in a doubtful way, ended early,
//! or was followed by stray bytes is closed, never used again. Upgrades
//! (WebSocket) and HTTP/2 stay on hyper.

mod chunked;
mod head;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin as StdPin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::client::conn::http1 as hyper_http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf};
use tokio::time::{Instant, Sleep};

use super::connector::TlsConn;
use super::read_waker::ReadWaker;
use super::{BoxError, RequestBody};
use crate::platform::worker;
use head::{Framing, Parsed, RequestFraming};

/// What went wrong in an exchange on an upstream HTTP/1.1 connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The client's request body broke while it was being sent.
    #[error("{0}")]
    ClientBody(#[source] BoxError),
    /// The server closed the connection after the request went out and
    /// before a response head arrived.
    #[error("the server closed the connection before answering")]
    Closed,
    /// A new connection was closed by the server before the request was written.
    #[error("the server closed the new connection before the request was sent")]
    ClosedBeforeSending,
    /// The server closed the connection before the body it announced was complete.
    #[error("the server closed the connection before the response body was complete")]
    Truncated,
    /// The server sent something that is not a well-framed HTTP/1.1 response.
    #[error("the server sent {0}")]
    Malformed(&'static str),
    /// Reading or writing the connection failed.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// No response head came before the request's deadline (`response_timeout`).
    #[error("no response head came in time")]
    TimedOut,
}

impl Error {
    /// The connection closed or reset after the request went out, before a response.
    pub(crate) fn closed_early(&self) -> bool {
        match self {
            Error::Closed => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    // rustls: the peer closed without close_notify.
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// Why an exchange gave no response.
pub(crate) enum Failed {
    /// The connection was closed before any of the request was written: the
    /// request comes back, to go out on another connection.
    Unsent(Box<Request<RequestBody>>),
    /// The request was (at least partly) written; it is not sent again.
    Sent(Error),
}

/// An open HTTP/1.1 connection to the upstream, idle or carrying one exchange.
pub(crate) struct H1 {
    tls: TlsConn,
    /// Bytes read and not yet consumed; empty between exchanges.
    read: BytesMut,
    writer: Writer,
    address: Arc<str>,
    read_waker: Arc<ReadWaker>,
    /// The deadline of the response head, one timer for every exchange on the
    /// connection: pushed later for each request, which tokio does without
    /// touching its timer wheel, where a timer per request was put in and
    /// taken out again (~0.5k instructions per request, docs/benchmark.md,
    /// twelfth round). Made at the first exchange, with the worker whose
    /// runtime keeps it: a connection taken by another worker gets a new one,
    /// so that no timer outlives the runtime it belongs to.
    response_timer: Option<(usize, StdPin<Box<Sleep>>)>,
}

impl H1 {
    /// Starts HTTP/1.1 on a pinned connection. Boxed once, so handing it from
    /// the pool to a request and back moves a pointer.
    pub(crate) fn new(tls: TlsConn) -> Box<H1> {
        Box::new(H1 {
            address: tls.address().clone(),
            read_waker: tls.read_waker().clone(),
            tls,
            read: BytesMut::new(),
            writer: Writer::default(),
            response_timer: None,
        })
    }

    /// The address it reached.
    pub(crate) fn address(&self) -> &Arc<str> {
        &self.address
    }

    /// Watches the idle connection, with a close (or anything the server
    /// sends) waking `tender`: true while it stays open and quiet.
    pub(crate) fn tend(&mut self, tender: &Waker) -> bool {
        self.read_waker.set(tender);
        self.quiet()
    }

    /// True when the connection will take a request now.
    pub(crate) fn ready(&mut self) -> bool {
        self.quiet()
    }

    /// Taken for a request: its reads wake the request's task again.
    pub(crate) fn in_use(&self) {
        self.read_waker.clear();
    }

    /// Nothing to read and no close: an idle connection on which the server
    /// sent anything at all is not used again.
    fn quiet(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        StdPin::new(&mut self.tls)
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }

    /// Sends `req` and reads until the response head. The response's body
    /// carries the connection, and gives it back when it is complete and the
    /// connection may be used again.
    pub(crate) async fn exchange(
        mut self: Box<Self>,
        req: Request<RequestBody>,
        deadline: Instant,
    ) -> Result<Response<ResponseBody>, Failed> {
        if !self.quiet() {
            return Err(Failed::Unsent(Box::new(req)));
        }
        let head_request = req.method() == Method::HEAD;
        let (parts, body) = req.into_parts();
        let framing = RequestFraming::of(
            &parts.method,
            body.is_end_stream(),
            body.size_hint().exact(),
        );
        head::write_request(&mut self.writer.staged, &parts, framing);
        // Not kept while the answer is awaited: a large head would stay in
        // memory (with the client's read buffer its values point into).
        drop(parts);
        let mut sender = Sender::new(body, framing);
        let worker = worker::current();
        let mut timer = match self.response_timer.take() {
            Some((kept_by, mut timer)) if kept_by == worker => {
                timer.as_mut().reset(deadline);
                timer
            }
            _ => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let head = poll_fn(|cx| match self.poll_head(cx, &mut sender, head_request) {
            Poll::Pending => timer.as_mut().poll(cx).map(|()| Err(Error::TimedOut)),
            done => done,
        })
        .await
        .map_err(Failed::Sent)?;
        self.response_timer = Some((worker, timer));
        let keep_alive = head.keep_alive && sender.done && sender.failed.is_none();
        let decoder = match head.framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(chunked::Decoder::new()),
            Framing::Close => Decoder::Close,
        };
        let source = if sender.done {
            Source::Conn(self)
        } else {
            // Answered before the request body was all sent (an early error,
            // or a server that streams both ways): the rest goes on being
            // sent on a task of its own, whether or not the client reads the
            // answer, and the connection is not used again.
            let H1 {
                tls,
                read,
                mut writer,
                ..
            } = *self;
            let (reader, mut tls) = tokio::io::split(tls);
            tokio::spawn(async move {
                let sent = poll_fn(|cx| sender.poll_send(&mut tls, &mut writer, cx)).await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "the rest of a request body answered early was not sent");
                }
            });
            Source::Half(Box::new((reader, read)))
        };
        Ok(head.response.map(|()| ResponseBody {
            source,
            decoder,
            keep_alive,
        }))
    }

    /// Writes the request while reading, until a final response head has come.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        sender: &mut Sender,
        head_request: bool,
    ) -> Poll<Result<head::ResponseHead, Error>> {
        loop {
            if !sender.done {
                match sender.poll_send(&mut self.tls, &mut self.writer, cx) {
                    Poll::Ready(Ok(())) => sender.done = true,
                    Poll::Ready(Err(e @ Error::ClientBody(_))) => return Poll::Ready(Err(e)),
                    // The server may have answered and closed before taking
                    // the whole request: its answer is still read.
                    Poll::Ready(Err(e)) => {
                        sender.done = true;
                        sender.failed = Some(e);
                    }
                    Poll::Pending => {}
                }
            }
            match head::parse_response(&mut self.read, head_request)? {
                Parsed::Final(head) => return Poll::Ready(Ok(head)),
                Parsed::Interim => continue,
                Parsed::Partial => {}
            }
            match ready!(self.poll_read(cx, 8 * 1024)) {
                Ok(0) => return Poll::Ready(Err(sender.failed.take().unwrap_or(Error::Closed))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(sender.failed.take().unwrap_or(Error::Io(e)))),
            }
        }
    }

    /// Reads into `read`, with room for at least `want` bytes.
    fn poll_read(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < want / 2 {
            self.read.reserve(want);
        }
        tokio_util::io::poll_read_buf(StdPin::new(&mut self.tls), cx, &mut self.read)
    }

    /// Turns the connection over to hyper, with upgrades, for a request that
    /// may switch protocols (the connection then becomes a tunnel and never
    /// returns). It is idle, so nothing read is left behind.
    pub(crate) async fn upgradable(
        self: Box<Self>,
    ) -> hyper::Result<hyper_http1::SendRequest<RequestBody>> {
        let H1 { tls, .. } = *self;
        let (send, conn) = hyper_http1::handshake(TokioIo::new(tls)).await?;
        let conn = conn.with_upgrades();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection for an upgrade ended with an error");
            }
        });
        Ok(send)
    }
}

/// What is on its way out, in order: small pieces (the head, chunk sizes,
/// small data) staged in one buffer, so a small request goes out in one
/// write, and large data as it came.
#[derive(Default)]
struct Writer {
    staged: BytesMut,
    queue: VecDeque<Bytes>,
}

impl Writer {
    /// Moves the staged bytes to the queue.
    fn stage(&mut self) {
        if !self.staged.is_empty() {
            self.queue.push_back(self.staged.split().freeze());
        }
    }

    /// Queues `data` after what is staged (copied, when small).
    fn push(&mut self, data: Bytes) {
        if data.len() <= 1024 {
            self.staged.extend_from_slice(&data);
        } else {
            self.stage();
            self.queue.push_back(data);
        }
    }

    fn queued(&self) -> usize {
        self.staged.len() + self.queue.iter().map(Bytes::len).sum::<usize>()
    }

    /// Writes everything queued to `io`.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        self.stage();
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); 4];
            let n = slices.len().min(self.queue.len());
            for (slice, bytes) in slices.iter_mut().zip(&self.queue) {
                *slice = IoSlice::new(bytes);
            }
            let mut written = ready!(StdPin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while written > 0 {
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                if written >= front.len() {
                    written -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        // A big head leaves a big buffer behind: not kept for the next request.
        if self.staged.capacity() > 4096 {
            self.staged = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

/// A request body on its way out, with its framing.
pub(crate) struct Sender {
    /// `None` once it has ended.
    body: Option<RequestBody>,
    framing: RequestFraming,
    /// What a `Content-Length` body has left to send.
    left: u64,
    /// Everything was written and flushed.
    done: bool,
    /// Writing failed (the server may still have answered).
    failed: Option<Error>,
}

/// Most bytes queued before they are written.
const MAX_QUEUED: usize = 64 * 1024;

impl Sender {
    fn new(body: RequestBody, framing: RequestFraming) -> Sender {
        let ends = body.is_end_stream();
        Sender {
            body: (!ends).then_some(body),
            framing,
            left: match framing {
                RequestFraming::Length(n) if !ends => n,
                _ => 0,
            },
            done: false,
            failed: None,
        }
    }

    /// Sends what the body has ready, and flushes it; ready once the whole
    /// request has been written.
    fn poll_send<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        writer: &mut Writer,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        loop {
            let mut waiting = false;
            while let Some(body) = self.body.as_mut() {
                if writer.queued() >= MAX_QUEUED {
                    break;
                }
                match StdPin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            self.data(writer, data)?;
                        }
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error::ClientBody(e))),
                    Poll::Ready(None) => {
                        self.end(writer)?;
                        self.body = None;
                    }
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                }
            }
            ready!(writer.poll_write(io, cx)).map_err(Error::Io)?;
            if self.body.is_some() && !waiting {
                continue;
            }
            ready!(StdPin::new(&mut *io).poll_flush(cx)).map_err(Error::Io)?;
            return if self.body.is_none() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
    }

    fn data(&mut self, writer: &mut Writer, data: Bytes) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            RequestFraming::Length(_) => {
                let n = data.len() as u64;
                if n > self.left {
                    return Err(Error::ClientBody(
                        "the body is longer than its Content-Length".into(),
                    ));
                }
                self.left -= n;
                writer.push(data);
            }
            RequestFraming::Chunked => {
                let _ = write!(writer.staged, "{:x}\r\n", data.len());
                writer.push(data);
                writer.staged.extend_from_slice(b"\r\n");
            }
            RequestFraming::None => {
                return Err(Error::ClientBody(
                    "a body on a request that announced none".into(),
                ))
            }
        }
        Ok(())
    }

    fn end(&mut self, writer: &mut Writer) -> Result<(), Error> {
        match self.framing {
            RequestFraming::Length(_) if self.left > 0 => Err(Error::ClientBody(
                "the body ended before its Content-Length".into(),
            )),
            RequestFraming::Chunked => {
                writer.staged.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Where a response body is.
enum Decoder {
    /// This many bytes left.
    Length(u64),
    Chunked(chunked::Decoder),
    /// Until the server closes.
    Close,
    Done,
}

/// What a response body is read from.
enum Source {
    /// The whole connection, which may be used again.
    Conn(Box<H1>),
    /// Its reading half and what was read, while a task finishes sending
    /// the request on the other half.
    Half(Box<(ReadHalf<TlsConn>, BytesMut)>),
    /// Nothing: the body is over (or failed).
    Gone,
}

impl Source {
    /// What was read and not yet consumed.
    fn read(&mut self) -> Option<&mut BytesMut> {
        match self {
            Source::Conn(conn) => Some(&mut conn.read),
            Source::Half(half) => Some(&mut half.1),
            Source::Gone => None,
        }
    }

    /// Reads more, with room for at least `want` bytes.
    fn poll_read(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        match self {
            Source::Conn(conn) => conn.poll_read(cx, want),
            Source::Half(half) => {
                let (reader, read) = &mut **half;
                if read.capacity() - read.len() < want / 2 {
                    read.reserve(want);
                }
                tokio_util::io::poll_read_buf(StdPin::new(reader), cx, read)
            }
            Source::Gone => Poll::Ready(Ok(0)),
        }
    }
}

/// A response body read from the connection that carries it.
pub(crate) struct ResponseBody {
    source: Source,
    decoder: Decoder,
    /// The connection may carry another request once this body is done.
    keep_alive: bool,
}

impl ResponseBody {
    /// The connection, when the whole response has been read and it may
    /// carry another request; a big read buffer is let go first.
    pub(crate) fn reusable(&mut self) -> Option<Box<H1>> {
        if !matches!(self.decoder, Decoder::Done) || !self.keep_alive {
            return None;
        }
        let Source::Conn(mut conn) = std::mem::replace(&mut self.source, Source::Gone) else {
            return None;
        };
        if !conn.read.is_empty() {
            // Bytes after the response: the server is not in step with us.
            return None;
        }
        if conn.read.capacity() > 16 * 1024 {
            conn.read = BytesMut::new();
        }
        Some(conn)
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.keep_alive = false;
        self.decoder = Decoder::Done;
        self.source = Source::Gone;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: StdPin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            if matches!(this.decoder, Decoder::Done) {
                return Poll::Ready(None);
            }
            let Some(read) = this.source.read() else {
                return Poll::Ready(None);
            };
            let want = match &mut this.decoder {
                Decoder::Length(left) => {
                    if !read.is_empty() {
                        let n = usize::try_from(*left).unwrap_or(usize::MAX).min(read.len());
                        *left -= n as u64;
                        let data = read.split_to(n).freeze();
                        if *left == 0 {
                            this.decoder = Decoder::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if *left > 16 * 1024 {
                        64 * 1024
                    } else {
                        8 * 1024
                    }
                }
                Decoder::Chunked(chunked) => match chunked.next(read) {
                    Ok(chunked::Chunk::Data(data)) => {
                        return Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(chunked::Chunk::End) => {
                        this.decoder = Decoder::Done;
                        return Poll::Ready(None);
                    }
                    Ok(chunked::Chunk::More) => 32 * 1024,
                    Err(e) => return this.fail(e),
                },
                Decoder::Close => {
                    if !read.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(read.split().freeze()))));
                    }
                    32 * 1024
                }
                Decoder::Done => return Poll::Ready(None),
            };
            match ready!(this.source.poll_read(cx, want)) {
                Ok(0) if matches!(this.decoder, Decoder::Close) => {
                    this.decoder = Decoder::Done;
                    this.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::Truncated),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decoder, Decoder::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(left) => SizeHint::with_exact(left),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
