//! The floor under pinproxy's engine, and the steps between it and pinproxy.
//!
//! The floor (`floor`) is a bare HTTP/1.1 forwarder on the same tokio and
//! rustls (ring) that pinproxy runs on, with no HTTP library. It answers the
//! question "what would an HTTP/1.1 engine of our own save", which the
//! instruction counts of hyper's parts could only estimate. Three more builds
//! of this file put hyper back one side at a time, so that each side's price is
//! measured rather than estimated (docs/benchmark.md, eleventh round):
//! - `floor-hyper-client`: hyper's HTTP/1.1 client towards the upstream, driven
//!   by the request's own task as pinproxy's pool drives it;
//! - `floor-hyper-server`: hyper's HTTP/1.1 server towards the client;
//! - `floor-hyper`: both, which is pinproxy's engine without pinproxy.
//!
//! These are benchmark references, not proxies to deploy. Each runs one
//! single-threaded runtime per core (under `SCHED_BATCH` on Linux, as `pinproxy
//! run` puts its threads), each accepting on a `SO_REUSEPORT` socket of its own
//! and keeping its own pool of upstream TLS connections, checked by the
//! upstream's SHA-1 pin and handshake signature. Unlike pinproxy they copy
//! headers as they came (dropping hop-by-hop ones), take whole bodies only
//! (Content-Length where no hyper reads them; each body is read whole before it
//! is passed on), and have no policy, access log, metrics, timers or limits: the
//! floor costs what the syscalls, TLS and the runtime cost, and each hyper build
//! adds what hyper's side costs. They use none of pinproxy's library, on
//! purpose, so that none of pinproxy's code is in what they measure; the pin
//! check is a few lines of their own (pinproxy's `PinVerifier` also feeds the
//! metrics), run once per upstream connection.
//!
//! Each reads the first `[[upstream]]` of a pinproxy config (`listen`,
//! `address`, `fingerprints`), so `tests/bench/split.sh` runs it as it runs a
//! build:
//!   cargo build --release --example floor --example floor-hyper-client \
//!       --example floor-hyper-server --example floor-hyper
//!   bash tests/bench/split.sh target/release/pinproxy:warn target/release/examples/floor nginx

/// Which sides of the forwarder hyper runs; each build of this file picks one.
#[derive(Clone, Copy)]
#[allow(dead_code)] // each binary uses one of them
pub enum Hyper {
    /// Neither: the floor.
    Neither,
    /// The side towards the upstream.
    Client,
    /// The side towards the client.
    Server,
    /// Both sides.
    Both,
}

/// Runs the forwarder `floor run --config PINPROXY-CONFIG` describes.
pub fn main(hyper: Hyper) {
    let args: Vec<String> = std::env::args().collect();
    let config = match args.as_slice() {
        [_, run, flag, path] if run == "run" && flag == "--config" => path,
        _ => {
            eprintln!("usage: floor run --config PINPROXY-CONFIG");
            std::process::exit(2);
        }
    };
    #[cfg(unix)]
    if let Err(e) = unix::run(config, hyper) {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
    #[cfg(not(unix))]
    {
        let _ = (config, hyper);
        eprintln!("floor: a benchmark reference for Unix only");
        std::process::exit(2);
    }
}

#[cfg(unix)]
mod unix {
    use std::cell::RefCell;
    use std::future::{poll_fn, Future};
    use std::io;
    use std::net::SocketAddr;
    use std::pin::{pin, Pin as StdPin};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use bytes::Bytes;
    use http::header::{HeaderName, HeaderValue, HOST};
    use http::{Request, Response, StatusCode, Version};
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Body, Incoming};
    use hyper::client::conn::http1 as client;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use sha1::{Digest, Sha1};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::client::TlsStream;
    use tokio_rustls::TlsConnector;

    use super::Hyper;

    /// Headers that describe one hop, not the message.
    const HOP_BY_HOP: [&str; 7] = [
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
    ];

    type Tls = TlsStream<TcpStream>;

    /// An HTTP/1.1 connection of hyper's client with the state machine that
    /// must be polled for anything to happen on it.
    struct HyperConn {
        send: client::SendRequest<Full<Bytes>>,
        conn: client::Connection<TokioIo<Tls>, Full<Bytes>>,
    }

    thread_local! {
        // Each worker's idle upstream connections.
        static POOL: RefCell<Vec<Tls>> = const { RefCell::new(Vec::new()) };
        static HYPER_POOL: RefCell<Vec<HyperConn>> = const { RefCell::new(Vec::new()) };
    }

    struct Upstream {
        address: SocketAddr,
        connector: TlsConnector,
    }

    /// The certificate's SHA-1 must be the pin; the handshake signature is checked as rustls does.
    #[derive(Debug)]
    struct Pin {
        sha1: Vec<u8>,
        provider: Arc<CryptoProvider>,
    }

    impl ServerCertVerifier for Pin {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            if Sha1::digest(end_entity.as_ref()).as_slice() == self.sha1.as_slice() {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(rustls::Error::General(
                    "certificate does not match the pin".into(),
                ))
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    fn invalid(why: impl Into<String>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, why.into())
    }

    /// `listen`, `address` and the first pin of the config's first upstream.
    fn read_config(path: &str) -> io::Result<(SocketAddr, SocketAddr, Vec<u8>)> {
        let text = std::fs::read_to_string(path)?;
        let value: toml::Value = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let upstream = value
            .get("upstream")
            .and_then(|u| u.get(0))
            .ok_or_else(|| invalid("no [[upstream]]"))?;
        let field = |key: &str| {
            upstream
                .get(key)
                .and_then(toml::Value::as_str)
                .ok_or_else(|| invalid(format!("no {key}")))
        };
        let address = |key: &str| {
            field(key)?
                .parse::<SocketAddr>()
                .map_err(|e| invalid(format!("{key}: {e}")))
        };
        let pin = upstream
            .get("fingerprints")
            .and_then(|f| f.get(0))
            .and_then(toml::Value::as_str)
            .ok_or_else(|| invalid("no fingerprints"))?;
        let sha1 = pin
            .split(':')
            .map(|byte| u8::from_str_radix(byte, 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| invalid(format!("fingerprint: {e}")))?;
        Ok((address("listen")?, address("address")?, sha1))
    }

    /// As `pinproxy run` does before its runtime starts (main.rs, `scheduling`).
    #[cfg(target_os = "linux")]
    fn prefer_batches() {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: the calling thread is alive for the call, and `param` valid while it is read.
        unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_BATCH, &param) };
    }

    #[cfg(not(target_os = "linux"))]
    fn prefer_batches() {}

    pub(super) fn run(config: &str, hyper: Hyper) -> io::Result<()> {
        let (listen, address, sha1) = read_config(config)?;
        prefer_batches();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pin { sha1, provider }))
            .with_no_client_auth();
        let upstream = Arc::new(Upstream {
            address,
            connector: TlsConnector::from(Arc::new(tls)),
        });
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut threads = Vec::with_capacity(workers);
        for _ in 0..workers {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(listen),
                socket2::Type::STREAM,
                None,
            )?;
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
            socket.bind(&listen.into())?;
            socket.listen(1024)?;
            socket.set_nonblocking(true)?;
            let listener: std::net::TcpListener = socket.into();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let upstream = upstream.clone();
            threads.push(std::thread::spawn(move || {
                runtime.block_on(accept(listener, upstream, hyper))
            }));
        }
        for thread in threads {
            thread
                .join()
                .map_err(|_| io::Error::other("a worker panicked"))??;
        }
        Ok(())
    }

    async fn accept(
        listener: std::net::TcpListener,
        upstream: Arc<Upstream>,
        hyper: Hyper,
    ) -> io::Result<()> {
        let listener = TcpListener::from_std(listener)?;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                // EMFILE and friends: as pinproxy's accept loop, wait for descriptors.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let _ = client.set_nodelay(true);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = match hyper {
                    Hyper::Neither => serve(client, &upstream, false).await,
                    Hyper::Client => serve(client, &upstream, true).await,
                    Hyper::Server => serve_hyper(client, upstream, false).await,
                    Hyper::Both => serve_hyper(client, upstream, true).await,
                };
            });
        }
    }

    fn is_hop_by_hop(name: &str) -> bool {
        HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop))
    }

    /// The Content-Length among `headers` (0 when there is none); a chunked
    /// body is refused.
    fn content_length(headers: &[httparse::Header<'_>]) -> io::Result<usize> {
        let mut length = 0;
        for header in headers {
            if header.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| invalid("bad Content-Length"))?;
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(invalid("chunked bodies are not handled here"));
            }
        }
        Ok(length)
    }

    /// Appends `name: value\r\n` for each header that is not hop-by-hop.
    fn copy_headers(headers: &[httparse::Header<'_>], out: &mut Vec<u8>) {
        for header in headers.iter().filter(|h| !is_hop_by_hop(h.name)) {
            out.extend_from_slice(header.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(header.value);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The same, from a `HeaderMap`.
    fn write_headers(headers: &http::HeaderMap, out: &mut Vec<u8>) {
        for (name, value) in headers.iter().filter(|(n, _)| !is_hop_by_hop(n.as_str())) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The headers that are not hop-by-hop, as a `HeaderMap`.
    fn header_map(headers: &[httparse::Header<'_>]) -> io::Result<http::HeaderMap> {
        let mut map = http::HeaderMap::with_capacity(headers.len());
        for header in headers.iter().filter(|h| !is_hop_by_hop(h.name)) {
            map.append(
                HeaderName::from_bytes(header.name.as_bytes()).map_err(io::Error::other)?,
                HeaderValue::from_bytes(header.value).map_err(io::Error::other)?,
            );
        }
        Ok(map)
    }

    /// Reads more of `stream` into `buf`; false at the end of the stream.
    async fn fill(stream: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> io::Result<bool> {
        if buf.len() == buf.capacity() {
            buf.reserve(8192);
        }
        Ok(stream.read_buf(buf).await? > 0)
    }

    async fn connect(upstream: &Upstream) -> io::Result<Tls> {
        let tcp = TcpStream::connect(upstream.address).await?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").map_err(|e| invalid(e.to_string()))?;
        upstream.connector.connect(name, tcp).await
    }

    /// Sends `request` (head and body) on a pooled upstream connection and
    /// reads the response. `head` sees the parsed response head once and
    /// returns its body's length. Returns the bytes read and where the body
    /// lies in them.
    async fn exchange(
        upstream: &Upstream,
        request: &[u8],
        mut head: impl FnMut(&httparse::Response<'_, '_>) -> io::Result<usize>,
    ) -> io::Result<(Vec<u8>, std::ops::Range<usize>)> {
        let mut server = match POOL.with(|pool| pool.borrow_mut().pop()) {
            Some(server) => server,
            None => connect(upstream).await?,
        };
        server.write_all(request).await?;
        let mut response: Vec<u8> = Vec::with_capacity(4096);
        let (head, body) = loop {
            if !fill(&mut server, &mut response).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(length) = parsed
                .parse(&response)
                .map_err(|e| invalid(e.to_string()))?
            {
                break (length, head(&parsed)?);
            }
        };
        while response.len() < head + body {
            if !fill(&mut server, &mut response).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        POOL.with(|pool| pool.borrow_mut().push(server));
        Ok((response, head..head + body))
    }

    /// True when a pooled hyper connection will take a request now (as
    /// pinproxy's pool asks, without a waker).
    fn ready(conn: &mut HyperConn) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match conn.send.poll_ready(&mut cx) {
            Poll::Ready(result) => result.is_ok(),
            Poll::Pending => {
                StdPin::new(&mut conn.conn).poll(&mut cx).is_pending()
                    && matches!(conn.send.poll_ready(&mut cx), Poll::Ready(Ok(())))
            }
        }
    }

    /// Sends `request` through hyper's client on a pooled upstream connection,
    /// driving the connection from this task until the response body has
    /// ended, and returns the response with its whole body.
    async fn hyper_exchange(
        upstream: &Upstream,
        request: Request<Full<Bytes>>,
    ) -> io::Result<(http::response::Parts, Bytes)> {
        let pooled = HYPER_POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            while let Some(mut conn) = pool.pop() {
                if ready(&mut conn) {
                    return Some(conn);
                }
            }
            None
        });
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let io = TokioIo::new(connect(upstream).await?);
                let (send, conn) = client::handshake(io).await.map_err(io::Error::other)?;
                HyperConn { send, conn }
            }
        };
        let closed = || io::Error::from(io::ErrorKind::UnexpectedEof);
        let mut response = pin!(conn.send.send_request(request));
        let response = poll_fn(|cx| {
            if let Poll::Ready(result) = StdPin::new(&mut conn.conn).poll(cx) {
                return Poll::Ready(Err(result.err().map_or_else(closed, io::Error::other)));
            }
            response.as_mut().poll(cx).map_err(io::Error::other)
        })
        .await?;
        let (parts, mut body) = response.into_parts();
        let mut data = Vec::new();
        poll_fn(|cx| loop {
            let open = StdPin::new(&mut conn.conn).poll(cx);
            match StdPin::new(&mut body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(chunk) = frame.into_data() {
                        data.extend_from_slice(&chunk);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending if open.is_ready() => return Poll::Ready(Err(closed())),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await?;
        HYPER_POOL.with(|pool| pool.borrow_mut().push(conn));
        Ok((parts, Bytes::from(data)))
    }

    /// One client connection read and written by hand: each request head and
    /// body go to a pooled upstream connection (through hyper's client with
    /// `hyper_client`), its response back, until the client closes.
    async fn serve(
        mut client: TcpStream,
        upstream: &Upstream,
        hyper_client: bool,
    ) -> io::Result<()> {
        let mut input: Vec<u8> = Vec::with_capacity(4096);
        let mut request: Vec<u8> = Vec::with_capacity(4096);
        let mut output: Vec<u8> = Vec::with_capacity(4096);
        loop {
            request.clear();
            output.clear();
            let mut builder = None;
            let (head, body, close) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut parsed = httparse::Request::new(&mut headers);
                match parsed.parse(&input).map_err(|e| invalid(e.to_string()))? {
                    httparse::Status::Complete(head) => {
                        let method = parsed.method.unwrap_or("GET");
                        let path = parsed.path.unwrap_or("/");
                        if hyper_client {
                            let mut headers = header_map(parsed.headers)?;
                            headers.insert(HOST, HeaderValue::from_static("localhost"));
                            let mut start = Request::builder().method(method).uri(path);
                            if let Some(map) = start.headers_mut() {
                                *map = headers;
                            }
                            builder = Some(start);
                        } else {
                            request.extend_from_slice(method.as_bytes());
                            request.push(b' ');
                            request.extend_from_slice(path.as_bytes());
                            request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n");
                            copy_headers(parsed.headers, &mut request);
                            request.extend_from_slice(b"\r\n");
                        }
                        let close = parsed.version == Some(0)
                            || parsed.headers.iter().any(|h| {
                                h.name.eq_ignore_ascii_case("connection")
                                    && h.value.eq_ignore_ascii_case(b"close")
                            });
                        break (head, content_length(parsed.headers)?, close);
                    }
                    httparse::Status::Partial => {
                        if !fill(&mut client, &mut input).await? {
                            return Ok(());
                        }
                    }
                }
            };
            input.drain(..head);
            while input.len() < body {
                if !fill(&mut client, &mut input).await? {
                    return Ok(());
                }
            }
            if let Some(builder) = builder {
                let bytes = Bytes::copy_from_slice(&input[..body]);
                input.drain(..body);
                let sent = builder.body(Full::new(bytes)).map_err(io::Error::other)?;
                let (parts, body) = hyper_exchange(upstream, sent).await?;
                output.extend_from_slice(b"HTTP/1.1 ");
                output.extend_from_slice(parts.status.as_str().as_bytes());
                output.push(b' ');
                output.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
                output.extend_from_slice(b"\r\n");
                write_headers(&parts.headers, &mut output);
                if close {
                    output.extend_from_slice(b"Connection: close\r\n");
                }
                output.extend_from_slice(b"\r\n");
                output.extend_from_slice(&body);
            } else {
                request.extend(input.drain(..body));
                let (response, body) = exchange(upstream, &request, |parsed| {
                    output.extend_from_slice(b"HTTP/1.1 ");
                    output.extend_from_slice(parsed.code.unwrap_or(502).to_string().as_bytes());
                    output.push(b' ');
                    output.extend_from_slice(parsed.reason.unwrap_or("").as_bytes());
                    output.extend_from_slice(b"\r\n");
                    copy_headers(parsed.headers, &mut output);
                    if close {
                        output.extend_from_slice(b"Connection: close\r\n");
                    }
                    output.extend_from_slice(b"\r\n");
                    content_length(parsed.headers)
                })
                .await?;
                output.extend_from_slice(&response[body]);
            }
            client.write_all(&output).await?;
            if close {
                return Ok(());
            }
        }
    }

    /// One client connection served by hyper's HTTP/1.1 server, with the
    /// settings `pinproxy run` gives it, each request forwarded by
    /// [`forward`].
    async fn serve_hyper(
        client: TcpStream,
        upstream: Arc<Upstream>,
        hyper_client: bool,
    ) -> io::Result<()> {
        let service = service_fn(move |req| {
            let upstream = upstream.clone();
            async move { forward(req, &upstream, hyper_client).await }
        });
        let mut http = server::Builder::new();
        http.header_read_timeout(None)
            .half_close(true)
            .keep_alive(true);
        http.serve_connection(TokioIo::new(client), service)
            .await
            .map_err(io::Error::other)
    }

    /// A request hyper's server parsed, forwarded by hyper's client (with
    /// `hyper_client`) or written and read by hand.
    async fn forward(
        req: Request<Incoming>,
        upstream: &Upstream,
        hyper_client: bool,
    ) -> io::Result<Response<Full<Bytes>>> {
        let (mut parts, body) = req.into_parts();
        let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
        if hyper_client {
            for hop in HOP_BY_HOP {
                parts.headers.remove(hop);
            }
            parts
                .headers
                .insert(HOST, HeaderValue::from_static("localhost"));
            parts.version = Version::HTTP_11;
            let (mut response, body) =
                hyper_exchange(upstream, Request::from_parts(parts, Full::new(body))).await?;
            for hop in HOP_BY_HOP {
                response.headers.remove(hop);
            }
            response.version = Version::HTTP_11;
            return Ok(Response::from_parts(response, Full::new(body)));
        }
        let mut request = Vec::with_capacity(512 + body.len());
        request.extend_from_slice(parts.method.as_str().as_bytes());
        request.push(b' ');
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        request.extend_from_slice(path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n");
        write_headers(&parts.headers, &mut request);
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(&body);
        let mut response = Response::builder();
        let (bytes, body) = exchange(upstream, &request, |parsed| {
            let status =
                StatusCode::from_u16(parsed.code.unwrap_or(502)).map_err(io::Error::other)?;
            response = Response::builder().status(status);
            if let Some(map) = response.headers_mut() {
                *map = header_map(parsed.headers)?;
            }
            content_length(parsed.headers)
        })
        .await?;
        let body = Bytes::from(bytes).slice(body);
        response.body(Full::new(body)).map_err(io::Error::other)
    }
}
