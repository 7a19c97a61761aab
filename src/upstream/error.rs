//! Why a request could not be answered by the upstream, told apart precisely
//! enough to pick the status, the `X-Pinproxy-Error` tag and whether to fail over.

use std::io;
use std::time::Duration;

use http::StatusCode;

use crate::tls::verify::PinMismatch;

/// Why a request could not be answered by the upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The presented certificate matched no pin.
    #[error("{0}")]
    FingerprintMismatch(PinMismatch),
    /// TLS failed for another reason (not TLS, unsupported version or cipher, bad signature…).
    #[error("TLS handshake with {address} failed: {reason}")]
    Handshake {
        /// `host:port` of the upstream.
        address: String,
        /// rustls' or the socket's explanation, with a hint where one helps.
        reason: String,
    },
    /// The handshake completed but the pin learned on first use could not be
    /// written to `known_pins`, so the connection is not used.
    #[error("the pin learned from {address} could not be recorded, so the connection is not used: {reason}")]
    PinStore {
        /// `host:port` of the upstream.
        address: String,
        /// What went wrong with the file, with the fix.
        reason: String,
    },
    /// DNS or TCP failure.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// `host:port` of the upstream.
        address: String,
        /// What the resolver or socket said.
        reason: String,
    },
    /// A connect, handshake or response timeout.
    #[error("{stage} with {address} timed out after {after:?}")]
    Timeout {
        /// `host:port` of the upstream.
        address: String,
        /// `connect`, `TLS handshake` or `waiting for the response`.
        stage: &'static str,
        /// The configured limit.
        after: Duration,
    },
    /// `max_connections` connections to the upstream were busy for `connect_timeout`.
    #[error("all {max_connections} connections to upstream {upstream:?} (max_connections) stayed busy for {waited:?}")]
    Busy {
        /// The upstream's name.
        upstream: String,
        /// The configured cap.
        max_connections: usize,
        /// How long the request waited for a slot.
        waited: Duration,
    },
    /// The client's request body broke while it was being forwarded (malformed
    /// chunked encoding, or the client went away).
    #[error("the request body from the client broke off: {reason}")]
    ClientBody {
        /// hyper's explanation.
        reason: String,
        /// It passed `max_request_body`.
        too_large: bool,
    },
    /// The connection broke after it was established (reset, closed early, bad HTTP).
    #[error("the connection to {address} failed: {reason}")]
    Protocol {
        /// `host:port` of the upstream.
        address: String,
        /// hyper's explanation.
        reason: String,
        /// The connection closed or reset after the request went out and before a
        /// response arrived.
        closed_early: bool,
    },
}

impl UpstreamError {
    /// The status the client gets and the `X-Pinproxy-Error` value.
    pub fn status_and_tag(&self) -> (StatusCode, &'static str) {
        match self {
            UpstreamError::FingerprintMismatch(_) => {
                (StatusCode::BAD_GATEWAY, "fingerprint-mismatch")
            }
            UpstreamError::Handshake { .. } => (StatusCode::BAD_GATEWAY, "handshake-failed"),
            // pinproxy's own state, not the server: no gateway error.
            UpstreamError::PinStore { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "pin-store-failed")
            }
            UpstreamError::Connect { .. } => (StatusCode::BAD_GATEWAY, "connect-failed"),
            UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            UpstreamError::Protocol { .. } => (StatusCode::BAD_GATEWAY, "upstream-failed"),
            UpstreamError::ClientBody { .. } => (StatusCode::BAD_REQUEST, "bad-request-body"),
            UpstreamError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "upstream-busy"),
        }
    }
}

impl UpstreamError {
    /// True when the next address of an upstream should be tried: this one could
    /// not be reached, or did not answer in time. Never for a pin mismatch.
    pub fn fails_over(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. }
                | UpstreamError::Timeout {
                    stage: "connect" | "TLS handshake",
                    ..
                }
        )
    }
}

pub(super) fn closed_early(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    // rustls: the peer closed without close_notify, as a server
                    // dropping an idle keep-alive connection often does.
                    | io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

pub(super) fn too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and all its causes, joined by ": ".
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
