//! What the operating system tells us about the people involved: who is at the
//! other end of a client socket (`peer`) and whether a file is one only its
//! owner and root could have written (`permissions`), and which connection
//! worker the calling thread is (`worker`); and how to replace a file the
//! operator owns without a reader ever seeing half of it (`replace_file`). The bottom layer: it uses
//! nothing else in the crate, and every layer above may ask it.

pub mod peer;
pub(crate) mod permissions;
pub(crate) mod replace_file;
pub mod worker;
