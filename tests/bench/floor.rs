//! The floor under pinproxy's engine: a bare HTTP/1.1 forwarder on the same
//! tokio and rustls (ring) that pinproxy runs on, with no HTTP library. It is a
//! benchmark reference, not a proxy to deploy: it answers the question "what
//! would an HTTP/1.1 engine of our own save", which the instruction counts of
//! hyper's parts could only estimate.
//!
//! Like pinproxy it runs one single-threaded runtime per core (under
//! `SCHED_BATCH` on Linux, as `pinproxy run` puts its threads), each accepting on
//! a `SO_REUSEPORT` socket of its own and keeping its own pool of upstream TLS
//! connections, and it checks the upstream's SHA-1 pin and handshake signature.
//! Unlike pinproxy it copies header lines as they came (dropping hop-by-hop
//! ones), takes Content-Length bodies only, and has no policy, access log,
//! metrics, timers or limits: what it costs is what the syscalls, TLS and the
//! runtime cost. It uses none of pinproxy's library, on purpose, so that none
//! of pinproxy's code is in what it measures; its pin check is a few lines of
//! its own (pinproxy's `PinVerifier` also feeds the metrics), run once per
//! upstream connection.
//!
//! It reads the first `[[upstream]]` of a pinproxy config (`listen`, `address`,
//! `fingerprints`), so `tests/bench/split.sh` runs it as it runs a build:
//!   cargo build --release --example floor
//!   bash tests/bench/split.sh target/release/pinproxy:warn target/release/examples/floor nginx

#[cfg(unix)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config = match args.as_slice() {
        [_, run, flag, path] if run == "run" && flag == "--config" => path,
        _ => {
            eprintln!("usage: floor run --config PINPROXY-CONFIG");
            std::process::exit(2);
        }
    };
    if let Err(e) = unix::run(config) {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("floor: a benchmark reference for Unix only");
    std::process::exit(2);
}

#[cfg(unix)]
mod unix {
    use std::cell::RefCell;
    use std::io;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use sha1::{Digest, Sha1};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::client::TlsStream;
    use tokio_rustls::TlsConnector;

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

    thread_local! {
        // Each worker's idle upstream connections.
        static POOL: RefCell<Vec<TlsStream<TcpStream>>> = const { RefCell::new(Vec::new()) };
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

    pub(super) fn run(config: &str) -> io::Result<()> {
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
                runtime.block_on(accept(listener, upstream))
            }));
        }
        for thread in threads {
            thread
                .join()
                .map_err(|_| io::Error::other("a worker panicked"))??;
        }
        Ok(())
    }

    async fn accept(listener: std::net::TcpListener, upstream: Arc<Upstream>) -> io::Result<()> {
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
                let _ = serve(client, &upstream).await;
            });
        }
    }

    /// Appends `name: value\r\n` for each header that is not hop-by-hop, and
    /// returns the Content-Length and whether `Connection: close` was among them.
    fn copy_headers(
        headers: &[httparse::Header<'_>],
        out: &mut Vec<u8>,
    ) -> io::Result<(Option<usize>, bool)> {
        let (mut length, mut close) = (None, false);
        for header in headers {
            if header.name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.parse().ok());
                length = Some(value.ok_or_else(|| invalid("bad Content-Length"))?);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(invalid("chunked bodies are not handled here"));
            } else if header.name.eq_ignore_ascii_case("connection") {
                close = header.value.eq_ignore_ascii_case(b"close");
            }
            if HOP_BY_HOP
                .iter()
                .any(|hop| header.name.eq_ignore_ascii_case(hop))
            {
                continue;
            }
            out.extend_from_slice(header.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(header.value);
            out.extend_from_slice(b"\r\n");
        }
        Ok((length, close))
    }

    /// Reads more of `stream` into `buf`; false at the end of the stream.
    async fn fill(stream: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> io::Result<bool> {
        if buf.len() == buf.capacity() {
            buf.reserve(8192);
        }
        Ok(stream.read_buf(buf).await? > 0)
    }

    /// One client connection: each request head and body go to a pooled
    /// upstream connection, its response back, until the client closes.
    async fn serve(mut client: TcpStream, upstream: &Upstream) -> io::Result<()> {
        let mut input: Vec<u8> = Vec::with_capacity(4096);
        let mut output: Vec<u8> = Vec::with_capacity(4096);
        loop {
            let (head, body, close) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut request = httparse::Request::new(&mut headers);
                match request.parse(&input).map_err(|e| invalid(e.to_string()))? {
                    httparse::Status::Complete(head) => {
                        output.clear();
                        output.extend_from_slice(request.method.unwrap_or("GET").as_bytes());
                        output.push(b' ');
                        output.extend_from_slice(request.path.unwrap_or("/").as_bytes());
                        output.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n");
                        let (length, close) = copy_headers(request.headers, &mut output)?;
                        output.extend_from_slice(b"\r\n");
                        break (
                            head,
                            length.unwrap_or(0),
                            close || request.version == Some(0),
                        );
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
            output.extend(input.drain(..body));

            let mut server = match POOL.with(|pool| pool.borrow_mut().pop()) {
                Some(server) => server,
                None => {
                    let tcp = TcpStream::connect(upstream.address).await?;
                    let _ = tcp.set_nodelay(true);
                    let name =
                        ServerName::try_from("localhost").map_err(|e| invalid(e.to_string()))?;
                    upstream.connector.connect(name, tcp).await?
                }
            };
            server.write_all(&output).await?;
            output.clear();
            let mut response: Vec<u8> = Vec::with_capacity(4096);
            let (head, body) = loop {
                if !fill(&mut server, &mut response).await? {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut parsed = httparse::Response::new(&mut headers);
                if let httparse::Status::Complete(head) = parsed
                    .parse(&response)
                    .map_err(|e| invalid(e.to_string()))?
                {
                    output.extend_from_slice(b"HTTP/1.1 ");
                    output.extend_from_slice(parsed.code.unwrap_or(502).to_string().as_bytes());
                    output.push(b' ');
                    output.extend_from_slice(parsed.reason.unwrap_or("").as_bytes());
                    output.extend_from_slice(b"\r\n");
                    let (length, _) = copy_headers(parsed.headers, &mut output)?;
                    if close {
                        output.extend_from_slice(b"Connection: close\r\n");
                    }
                    output.extend_from_slice(b"\r\n");
                    break (
                        head,
                        length.ok_or_else(|| invalid("a response without Content-Length"))?,
                    );
                }
            };
            while response.len() < head + body {
                if !fill(&mut server, &mut response).await? {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            output.extend_from_slice(&response[head..head + body]);
            POOL.with(|pool| pool.borrow_mut().push(server));
            client.write_all(&output).await?;
            if close {
                return Ok(());
            }
        }
    }
}
