//! HTTP clients the way tools talk to a listener, and what they got back.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub type TestBody = BoxBody<Bytes, Infallible>;

/// One client connection to `addr` that stays open: every request sent on it
/// reaches the same proxy worker (unlike [`client`], which may open new ones).
pub struct KeptConnection(hyper::client::conn::http1::SendRequest<TestBody>);

impl KeptConnection {
    pub async fn open(addr: SocketAddr) -> KeptConnection {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeptConnection(sender)
    }

    /// Starts a GET of `path` once the previous response is done; the returned
    /// future can be spawned while the connection is used for the next one.
    pub async fn get(
        &mut self,
        path: &str,
    ) -> impl std::future::Future<Output = hyper::Result<Response<Incoming>>> {
        self.0.ready().await.unwrap();
        let req = Request::get(path)
            .header("host", "localhost")
            .body(empty())
            .unwrap();
        self.0.send_request(req)
    }
}

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn empty() -> TestBody {
    Full::new(Bytes::new()).boxed()
}

pub fn full(s: impl Into<Bytes>) -> TestBody {
    Full::new(s.into()).boxed()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    pub fn error_tag(&self) -> Option<&str> {
        self.headers
            .get("x-pinproxy-error")
            .and_then(|v| v.to_str().ok())
    }
}

pub async fn send(client: &Client<HttpConnector, TestBody>, req: Request<TestBody>) -> Answer {
    let resp = client.request(req).await.expect("the proxy answered");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Answer {
    let req = Request::get(url).body(empty()).unwrap();
    send(&client(), req).await
}
