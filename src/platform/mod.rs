//! What the operating system tells us about the people involved: who is at the
//! other end of a client socket (`peer`) and whether a file is one only its
//! owner and root could have written (`permissions`), and which connection
//! worker the calling thread is (`worker`); users' and groups' names (`users`; Windows accounts in `windows/`); and how to replace a file the
//! operator owns without a reader ever seeing half of it (`replace_file`). The bottom layer: it uses
//! nothing else in the crate, and every layer above may ask it.

pub mod peer;
// Owners, modes and the user database are Unix's; elsewhere (Windows) stand-ins
// say what does not apply there.
#[cfg_attr(not(unix), path = "not_unix/permissions.rs")]
pub(crate) mod permissions;
pub(crate) mod replace_file;
#[cfg_attr(windows, path = "windows/users.rs")]
pub(crate) mod users;
// Who owns a client's TCP socket, from Windows' TCP table.
#[cfg(windows)]
mod windows {
    pub(super) mod tcp_owner;
}
pub mod worker;
