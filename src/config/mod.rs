//! The configuration: the TOML file (or the `run` flags) turned into checked,
//! typed settings. Every error names where it is (file:line:column, or the flag)
//! and says how to fix it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Deserialize;
use toml::Spanned;

use crate::tls::identity::ClientIdentity;
use crate::tls::pin::CertPin;

mod address;
mod egress;
mod errors;
mod listener;
mod load;
mod model;
mod raw;
mod upstream;

pub use address::{join_host_port, parse_address, parse_server_name, with_default_port};
pub(crate) use egress::percent_decode;
pub use egress::EgressProxy;
pub use errors::ConfigError;
pub use listener::parse_client_target;
pub use load::{default_path, read, Flags};
pub use model::*;

// What the files of this folder share (each opens with `use super::*`).
use address::*;

use errors::{every_error, explain_toml_error, Problem};
use listener::*;
use raw::*;
use upstream::*;

#[cfg(test)]
mod tests;
