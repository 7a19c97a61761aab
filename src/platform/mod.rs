//! What the operating system tells us about the people involved: who is at the
//! other end of a client socket (`peer`), whether a file is one only its owner
//! and root could have written (`permissions`), which connection worker the
//! calling thread is (`worker`), users' and groups' names (`users`; Windows
//! accounts in `windows/`), what this process uses (`process`), and how to
//! replace a file the operator owns without a reader ever seeing half of it
//! (`replace_file`); and `in_place`, which boxes the request path's large
//! futures without copying them. The bottom layer: it uses nothing else in
//! the crate, and every layer above may ask it.

pub(crate) mod in_place;
pub mod peer;
// Owners, modes and the user database are Unix's; elsewhere (Windows) stand-ins
// say what does not apply there.
#[cfg_attr(not(unix), path = "not_unix/permissions.rs")]
pub(crate) mod permissions;
// This process's memory, files and CPU time, for the process_* metrics.
#[cfg_attr(windows, path = "windows/process.rs")]
pub(crate) mod process;
pub(crate) mod replace_file;
#[cfg_attr(windows, path = "windows/users.rs")]
pub(crate) mod users;
// Who owns a client's TCP socket, from Windows' TCP table.
#[cfg(windows)]
mod windows {
    pub(super) mod tcp_owner;
    #[cfg(test)]
    pub(super) mod wine;
}
pub mod worker;

/// This process's resource use (`process::usage`); `None` where the system did not say.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    pub(crate) resident_bytes: Option<i64>,
    pub(crate) open_fds: Option<i64>,
    pub(crate) max_fds: Option<i64>,
    /// User plus system CPU time, in seconds.
    pub(crate) cpu_seconds: Option<f64>,
}
