//! Test harness: certificates made at test time, a real TLS upstream that
//! records what reaches it, the proxy in-process or as the built binary, and a
//! real HTTP client. Everything listens on 127.0.0.1 with OS-chosen ports.
//! One file per concern; each test uses some of them.
#![allow(dead_code)]

mod binary;
mod browser;
mod certs;
mod client;
mod curl;
mod proxy;
mod server;

// Each test binary uses a different part of the harness.
#[allow(unused_imports)]
pub use {binary::*, browser::*, certs::*, client::*, curl::*, proxy::*, server::*};
