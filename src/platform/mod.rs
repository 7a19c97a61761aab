//! What the operating system tells us about the people involved: who is at the
//! other end of a client socket (`peer`) and whether a file is one only its
//! owner and root could have written (`permissions`). The bottom layer: it uses
//! nothing else in the crate, and `config`, `tls`, `serve` and `ops` ask it.

pub mod peer;
pub(crate) mod permissions;
