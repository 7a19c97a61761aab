//! The subcommands other than `run`: `check`, `fingerprint`, `health`, `pins`
//! and `demo` (with the mock management API it serves).

pub mod check;
pub mod demo;
pub mod expect;
pub mod fingerprint;
pub mod health;
pub mod manual;
pub mod mock_api;
pub(crate) mod pin_edit;
pub mod pins;
