//! Listening sockets: a TCP address or a Unix socket file, bound the same way
//! for every listener, the admin endpoint included.
//!
//! A Unix socket file is created with its final mode and group from the start:
//! it is bound inside a fresh directory only pinproxy's user can enter, given
//! its mode and group there, and only then renamed into place, so there is no
//! moment in which it is open to more users than `socket_mode` says (whatever
//! the umask). A stale file left by a process that died is replaced; a live
//! socket or any other file at the path is an error. The file is removed when
//! the listener closes, unless something else has taken its place by then.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::{Listen, UnixSocket};
use crate::serve::socket_activation as systemd;

/// A bound listening socket.
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-socket listener and the file it owns (held for its `Drop`, which
    /// removes the file if it is still ours); none for a socket systemd passed.
    Unix(UnixListener, #[allow(dead_code)] Option<SocketFile>),
}

/// An accepted client connection.
pub enum Accepted {
    /// From a TCP listener, with the client's address.
    Tcp(TcpStream, SocketAddr),
    /// From a Unix-socket listener.
    Unix(UnixStream),
}

impl Listener {
    /// Binds `listen`.
    pub async fn bind(listen: &Listen) -> io::Result<Listener> {
        match listen {
            Listen::Tcp(addr) => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
            Listen::Unix(socket) => {
                let (std, file) = bind_unix(socket)?;
                std.set_nonblocking(true)?;
                Ok(Listener::Unix(UnixListener::from_std(std)?, Some(file)))
            }
            Listen::Systemd(socket) => {
                let inherited = systemd::take(&socket.name)?;
                match inherited {
                    systemd::Inherited::Tcp(std) => {
                        let addr = std.local_addr()?;
                        if !addr.ip().is_loopback() && !socket.allow_non_loopback {
                            return Err(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                format!(
                                    "systemd passed {addr} for systemd:{}, which is not a loopback address; set \
                                     ListenStream=127.0.0.1:PORT in the .socket unit, or allow_non_loopback = true if \
                                     that exposure is really intended",
                                    socket.name
                                ),
                            ));
                        }
                        std.set_nonblocking(true)?;
                        Ok(Listener::Tcp(TcpListener::from_std(std)?))
                    }
                    systemd::Inherited::Unix(std) => {
                        std.set_nonblocking(true)?;
                        Ok(Listener::Unix(UnixListener::from_std(std)?, None))
                    }
                }
            }
        }
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(tcp) => {
                let (stream, peer) = tcp.accept().await?;
                Ok(Accepted::Tcp(stream, peer))
            }
            Listener::Unix(unix, _) => Ok(Accepted::Unix(unix.accept().await?.0)),
        }
    }

    /// A second descriptor of the same socket, for an accept loop on another
    /// worker's reactor. This `Listener` still owns the socket file.
    pub fn share(&self) -> io::Result<SharedListener> {
        Ok(match self {
            Listener::Tcp(tcp) => SharedListener::Tcp(tcp.as_fd().try_clone_to_owned()?.into()),
            Listener::Unix(unix, _) => {
                SharedListener::Unix(unix.as_fd().try_clone_to_owned()?.into())
            }
        })
    }

    /// The socket without a reactor (no runtime is woken by its connections
    /// until an accept loop registers a copy), still owning its file.
    pub fn detach(self) -> io::Result<OwnedListener> {
        let shared = self.share()?;
        let file = match self {
            Listener::Tcp(_) => None,
            Listener::Unix(_, file) => file,
        };
        Ok(OwnedListener { shared, file })
    }

    /// Where it is bound: with port 0, the port the system chose.
    pub fn bound(&self, configured: &Listen) -> Listen {
        match self {
            Listener::Tcp(tcp) => tcp.local_addr().map_or(configured.clone(), Listen::Tcp),
            Listener::Unix(unix, _) => {
                let addr = unix.local_addr().ok();
                unix_bound(addr.as_ref().and_then(|a| a.as_pathname()), configured)
            }
        }
    }
}

/// A listening socket that accept loops take copies of; closing the socket
/// (and removing its file) waits for this and every copy.
pub struct OwnedListener {
    shared: SharedListener,
    /// Held for its `Drop`, and for a reload that changes its mode or group.
    file: Option<SocketFile>,
}

impl OwnedListener {
    /// Another descriptor of the socket, for one accept loop.
    pub fn share(&self) -> io::Result<SharedListener> {
        Ok(match &self.shared {
            SharedListener::Tcp(tcp) => SharedListener::Tcp(tcp.try_clone()?),
            SharedListener::Unix(unix) => SharedListener::Unix(unix.try_clone()?),
        })
    }

    /// Where it is bound: with port 0, the port the system chose.
    pub fn bound(&self, configured: &Listen) -> Listen {
        match &self.shared {
            SharedListener::Tcp(tcp) => tcp.local_addr().map_or(configured.clone(), Listen::Tcp),
            SharedListener::Unix(unix) => {
                let addr = unix.local_addr().ok();
                unix_bound(addr.as_ref().and_then(|a| a.as_pathname()), configured)
            }
        }
    }
}

/// What a Unix listener is bound to: as configured, or, for a socket systemd
/// passed, its path (the unit's mode and owner apply, not pinproxy's).
fn unix_bound(path: Option<&Path>, configured: &Listen) -> Listen {
    match (configured, path) {
        (Listen::Systemd(_), Some(path)) => Listen::Unix(crate::config::UnixSocket {
            path: path.to_path_buf(),
            mode: crate::config::DEFAULT_SOCKET_MODE,
            group: None,
        }),
        _ => configured.clone(),
    }
}

/// A listening socket's descriptor on its way to the worker that accepts on it.
pub enum SharedListener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A Unix-socket listener.
    Unix(std::os::unix::net::UnixListener),
}

impl SharedListener {
    /// Registers it with the calling runtime's reactor.
    pub fn register(self) -> io::Result<WorkerListener> {
        Ok(match self {
            SharedListener::Tcp(std) => WorkerListener::Tcp(TcpListener::from_std(std)?),
            SharedListener::Unix(std) => WorkerListener::Unix(UnixListener::from_std(std)?),
        })
    }
}

/// One worker's descriptor of a listening socket.
pub enum WorkerListener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-socket listener.
    Unix(UnixListener),
}

impl WorkerListener {
    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            WorkerListener::Tcp(tcp) => {
                let (stream, peer) = tcp.accept().await?;
                Ok(Accepted::Tcp(stream, peer))
            }
            WorkerListener::Unix(unix) => Ok(Accepted::Unix(unix.accept().await?.0)),
        }
    }
}

/// A socket file this process created; removed on drop if it is still ours.
pub struct SocketFile {
    path: PathBuf,
    /// Device and inode after the rename: another process's file at the same
    /// path later is not ours to remove.
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket file");
            }
        }
    }
}

impl OwnedListener {
    /// Sets the socket file's mode and group (a reload that changed them): only
    /// on the file this process created, never through a symlink or on whatever
    /// else now sits at the path (someone who can write the socket's directory
    /// could have planted a link to a file of their choosing). A socket systemd
    /// passed keeps the unit's settings.
    pub fn apply_permissions(&self, socket: &UnixSocket) -> io::Result<()> {
        match &self.file {
            Some(file) => file.set_permissions(socket),
            None => Ok(()),
        }
    }
}

impl SocketFile {
    fn still_ours(&self) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(&self.path)?;
        if meta.file_type().is_symlink() || (meta.dev(), meta.ino()) != self.id {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is no longer the socket pinproxy created (something replaced it{}): not changing it; check \
                     who can write that directory, then restart pinproxy to recreate the socket",
                    self.path.display(),
                    if meta.file_type().is_symlink() { " with a symlink" } else { "" }
                ),
            ));
        }
        Ok(())
    }

    fn set_permissions(&self, socket: &UnixSocket) -> io::Result<()> {
        self.still_ours()?;
        if let Some(gid) = socket.group {
            // lchown: a link swapped in after the check is changed, not its target.
            std::os::unix::fs::lchown(&self.path, None, Some(gid))
                .map_err(|e| group_error(gid, e))?;
        }
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &self.path,
            nix::sys::stat::Mode::from_bits_truncate(socket.mode),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .map_err(io::Error::from)?;
        self.still_ours()
    }
}

fn group_error(gid: u32, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "cannot give the socket file to group {gid} (socket_group): {e}; pinproxy's user must be a member \
             of that group"
        ),
    )
}

/// A socket in a directory every user may write (and that is not sticky) can
/// be replaced by anyone, who then receives the clients' requests: refused.
/// Group write lets the group do the same: warned about.
fn check_socket_dir(dir: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(()); // creating the socket reports it
    };
    let mode = meta.mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o002 != 0 && !sticky {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the socket's directory {} is writable by every user (mode {:04o}): anyone could replace the socket \
                 and receive your tools' requests. Fix: chmod o-w {} (or use a directory of pinproxy's own, such as \
                 /run/pinproxy)",
                dir.display(),
                mode & 0o7777,
                dir.display()
            ),
        ));
    }
    if mode & 0o020 != 0 && !sticky {
        tracing::warn!(
            directory = %dir.display(),
            "the socket's directory is writable by its group: members could replace the socket; prefer a directory only pinproxy's user can write (chmod g-w)"
        );
    }
    Ok(())
}

/// Mode and group of the socket while it is still in pinproxy's private
/// directory, before anyone else can reach it.
fn set_permissions(path: &Path, socket: &UnixSocket) -> io::Result<()> {
    if let Some(gid) = socket.group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| group_error(gid, e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket.mode))
}

fn bind_unix(socket: &UnixSocket) -> io::Result<(std::os::unix::net::UnixListener, SocketFile)> {
    let path = &socket.path;
    let dir = path.parent().unwrap_or(Path::new("/"));
    check_socket_dir(dir)?;
    clear_stale(path)?;
    // A private directory beside the final path: same file system, so the
    // rename is atomic, and nobody else can reach the socket while its mode is
    // still the umask's.
    let private = dir.join(format!(".pinproxy-{}-{}", std::process::id(), unique()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create the socket in {}: {e}; the directory must exist and be writable by pinproxy's \
                     user (under systemd: RuntimeDirectory=pinproxy gives /run/pinproxy)",
                    dir.display()
                ),
            )
        })?;
    let staged = private.join("s");
    let result = (|| {
        let listener = std::os::unix::net::UnixListener::bind(&staged)?;
        set_permissions(&staged, socket)?;
        std::fs::rename(&staged, path)?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok((
            listener,
            SocketFile {
                path: path.clone(),
                id: (meta.dev(), meta.ino()),
            },
        ))
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result
}

/// Removes a socket file that no process listens on any more; refuses to
/// touch anything else.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; pinproxy will not replace it: remove it or choose another path",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "a running process (another pinproxy?) already listens on {}: stop it or choose another path",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket file (its process is gone)");
            std::fs::remove_file(path)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{} is a socket pinproxy cannot check ({e}); remove it if no process uses it",
                path.display()
            ),
        )),
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(path: PathBuf, mode: u32) -> UnixSocket {
        UnixSocket {
            path,
            mode,
            group: None,
        }
    }

    #[tokio::test]
    async fn a_socket_file_gets_its_mode_whatever_the_umask_and_goes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o660, 0o666] {
            let path = dir.path().join("s.sock");
            let listen = Listen::Unix(socket(path.clone(), mode));
            let listener = Listener::bind(&listen).await.unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "{mode:o}");
            drop(listener);
            assert!(!path.exists(), "removed with the listener");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "no staging directory left: {left:?}");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_anything_else_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // A socket file whose process is gone: bound, then its listener dropped
        // without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listen = Listen::Unix(socket(path.clone(), 0o600));
        let live = Listener::bind(&listen).await.expect("stale file replaced");

        let err = Listener::bind(&listen)
            .await
            .err()
            .expect("live socket refused");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(live);

        std::fs::write(&path, "not a socket").unwrap();
        let err = Listener::bind(&listen)
            .await
            .err()
            .expect("regular file refused");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }

    #[tokio::test]
    async fn a_file_that_replaced_ours_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = Listener::bind(&Listen::Unix(socket(path.clone(), 0o600)))
            .await
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        drop(listener);
        assert!(path.exists());
    }
}
