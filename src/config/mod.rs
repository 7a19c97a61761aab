//! The configuration: the TOML file (or the `run` flags) turned into checked,
//! typed settings. Every error names where it is (file:line:column, or the flag)
//! and says how to fix it.

mod address;
mod egress;
mod errors;
mod listener;
mod load;
mod model;
mod raw;
mod requests;
mod secrets;
mod upstream;

pub use address::{join_host_port, parse_address, parse_server_name, with_default_port};
pub(crate) use egress::percent_decode;
pub use egress::EgressProxy;
pub use errors::ConfigError;
pub use listener::parse_client_target;
pub use load::{default_dir, default_path, read, Flags};
pub use model::*;
pub use requests::{parse_rule, RequestPolicy, RequestRule, RuleSet, Segment, UserRules};
pub use secrets::{InjectedHeader, Secret, SecretText};

#[cfg(test)]
mod tests;
