//! Unix socket files for `listen = "unix:PATH"`: created with their final mode
//! and group from the start (bound inside a fresh directory only pinproxy's
//! user can enter, given mode and group there, then renamed into place), a
//! stale file replaced, anything else refused, and removed when the listener
//! closes unless something else has taken its place.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::UnixSocket;

pub(crate) use std::os::unix::net::UnixListener as StdUnixListener;
pub(crate) use tokio::net::{UnixListener, UnixStream};

/// The uid of the process at the other end.
pub(crate) fn peer_uid(stream: &UnixStream) -> Option<u32> {
    crate::platform::peer::unix_peer(stream)
}

/// A second descriptor of the listening socket, for another worker.
pub(crate) fn duplicate(listener: &UnixListener) -> io::Result<StdUnixListener> {
    use std::os::fd::AsFd;
    Ok(listener.as_fd().try_clone_to_owned()?.into())
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

    pub(crate) fn set_permissions(&self, socket: &UnixSocket) -> io::Result<()> {
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

pub(crate) fn bind_unix(socket: &UnixSocket) -> io::Result<(StdUnixListener, SocketFile)> {
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
    use crate::config::Listen;
    use crate::serve::listen::Listener;

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
