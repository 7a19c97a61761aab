//! Who could have written the config file: the pins in it are the whole trust
//! decision, so whoever can change it (or swap a directory or symlink on the way
//! to it) can make pinproxy send credentials to their own server.
//!
//! The check is sshd's StrictModes, extended to symlinks: every component of
//! the path, and of every symlink target up to `/`, must be owned by root or by
//! the user pinproxy runs as, and must not be writable by everyone. A sticky
//! directory owned by root (`/tmp`) is fine: others cannot replace what they do
//! not own there. A read-only filesystem (a Kubernetes ConfigMap volume, mode
//! 0777 but mounted read-only) cannot be written by anyone, so its mode bits do
//! not count.

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed before giving up, as the kernel does (ELOOP).
const MAX_SYMLINKS: usize = 40;

/// What a checked file is, for the rules and the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    /// The config file (and files it names, such as a client key).
    Config,
    /// The `known_pins` file pinproxy writes: its directory is pinproxy's own, so
    /// a group that can write it is refused too (a group member could swap in
    /// their server's pin).
    PinStore,
}

impl Protected {
    fn noun(self) -> &'static str {
        match self {
            Protected::Config => "the config",
            Protected::PinStore => "the pin store (known_pins)",
        }
    }
}

/// Checks everything on the way to the config file `path`; `Err` says which
/// path is unsafe, why, and the command that fixes it. A path that does not
/// exist passes here, so reading it reports that plainly.
pub fn check(path: &Path) -> Result<(), String> {
    check_as(path, Protected::Config)
}

/// [`check`] with the rules of `what`.
pub fn check_as(path: &Path, what: Protected) -> Result<(), String> {
    let euid = nix::unistd::geteuid().as_raw();
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(_) => return Ok(()),
        }
    };
    let mut walk = Walk {
        euid,
        symlinks: 0,
        root: path,
        what,
    };
    match walk.resolve(&absolute) {
        Ok(_) => Ok(()),
        Err(Unsafe::Missing) => Ok(()),
        Err(Unsafe::Found(why)) => Err(why),
    }
}

enum Unsafe {
    /// A component does not exist (yet): not ours to judge.
    Missing,
    /// The reason, with the fix.
    Found(String),
}

struct Walk<'a> {
    euid: u32,
    symlinks: usize,
    /// The path as the user gave it, for messages.
    root: &'a Path,
    what: Protected,
}

impl Walk<'_> {
    /// Checks each component of the absolute `path` from `/` on, following
    /// symlinks (each target checked the same way); returns the real path.
    fn resolve(&mut self, path: &Path) -> Result<PathBuf, Unsafe> {
        let mut real = PathBuf::from("/");
        self.node(&real)?;
        for component in path.components() {
            match component {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    real.pop();
                }
                Component::Normal(name) => real = self.step(real, name)?,
            }
        }
        Ok(real)
    }

    fn step(&mut self, dir: PathBuf, name: &OsStr) -> Result<PathBuf, Unsafe> {
        let next = dir.join(name);
        let meta = std::fs::symlink_metadata(&next).map_err(missing)?;
        if !meta.file_type().is_symlink() {
            self.node(&next)?;
            return Ok(next);
        }
        // The link itself lives in `dir`, already checked: whoever may replace
        // it could write `dir`. Its target is checked from the top.
        self.symlinks += 1;
        if self.symlinks > MAX_SYMLINKS {
            return Err(Unsafe::Found(format!(
                "{}: more than {MAX_SYMLINKS} symlinks on the way (a loop?)",
                self.root.display()
            )));
        }
        let target = std::fs::read_link(&next).map_err(missing)?;
        self.resolve(&dir.join(target))
    }

    /// Checks the owner and mode of one existing path.
    fn node(&self, path: &Path) -> Result<(), Unsafe> {
        let meta = std::fs::metadata(path).map_err(missing)?;
        let uid = meta.uid();
        if uid != 0 && uid != self.euid {
            return Err(Unsafe::Found(format!(
                "refusing {} {}: {} is owned by {}, who is neither root nor the user pinproxy runs as ({}), \
                 and could change the pins to trust their own server. Fix: chown root {} (or keep the file where \
                 only root and {} can write, such as /etc/pinproxy or /var/lib/pinproxy)",
                self.what.noun(),
                self.root.display(),
                path.display(),
                user(uid),
                user(self.euid),
                path.display(),
                user(self.euid),
            )));
        }
        let mode = meta.mode();
        // The pin store also refuses group write: only pinproxy writes it.
        let strict = self.what == Protected::PinStore;
        let (others, who, bits) = if mode & 0o002 != 0 {
            (true, "every user on this machine", "o-w")
        } else if strict && mode & 0o020 != 0 {
            (true, "its group", "g-w")
        } else {
            (false, "", "")
        };
        let sticky_root_dir = meta.is_dir() && mode & 0o1000 != 0 && uid == 0;
        if others && !sticky_root_dir && !read_only(path) {
            let what = if meta.is_dir() { "directory" } else { "file" };
            let fix = format!("chmod {bits} {}", path.display());
            return Err(Unsafe::Found(format!(
                "refusing {} {}: the {what} {} is writable by {who} (mode {:04o}), so \
                 they could {} and make pinproxy trust their own server. Fix: {fix}",
                self.what.noun(),
                self.root.display(),
                path.display(),
                mode & 0o7777,
                if meta.is_dir() {
                    "replace what it holds"
                } else {
                    "change the pins"
                },
            )));
        }
        Ok(())
    }
}

/// The mode of a file every user may read (a key or secret that is then no
/// longer private); `None` when it is not, or cannot be read.
pub(crate) fn readable_by_everyone(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.mode();
    (mode & 0o004 != 0).then_some(mode & 0o7777)
}

/// Creates files only their owner may read or write, from the first byte on.
pub(crate) fn owner_only(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    options.mode(0o600)
}

/// Whether the user pinproxy runs as may create files in `dir`.
pub(crate) fn can_write_dir(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Missing, or unreadable to us (EACCES): reading the file says so plainly.
fn missing(_: io::Error) -> Unsafe {
    Unsafe::Missing
}

fn read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|fs| fs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// `uid 1000 (bob)`, or just the uid when it has no name.
fn user(uid: u32) -> String {
    match super::users::name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A config in a private directory under the system's temp dir.
    fn layout() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        (dir, file)
    }

    #[test]
    fn a_private_directory_under_sticky_tmp_passes() {
        let (_dir, file) = layout();
        assert_eq!(check(&file), Ok(()));
    }

    #[test]
    fn a_world_writable_file_is_refused_with_the_chmod() {
        let (_dir, file) = layout();
        chmod(&file, 0o666);
        let err = check(&file).unwrap_err();
        assert!(
            err.contains(&format!("chmod o-w {}", file.display())),
            "{err}"
        );
        assert!(err.contains("mode 0666"), "{err}");
    }

    #[test]
    fn a_world_writable_directory_holding_a_symlink_to_the_config_is_refused() {
        let (dir, file) = layout();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let link = open.join("proxy.toml");
        symlink(&file, &link).unwrap();
        let err = check(&link).unwrap_err();
        assert!(
            err.contains(&format!("chmod o-w {}", open.display())),
            "{err}"
        );
        // The same directory, sticky and owned by root (like /tmp): nobody else can swap the link.
        chmod(&open, 0o1777);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(check(&link), Ok(()));
        }
    }

    #[test]
    fn a_world_writable_ancestor_or_symlink_target_directory_is_refused() {
        let (dir, _) = layout();
        let open = dir.path().join("open");
        let inner = open.join("conf");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(inner.join("proxy.toml"), "").unwrap();
        chmod(&open, 0o777);
        let err = check(&inner.join("proxy.toml")).unwrap_err();
        assert!(
            err.contains(&format!("chmod o-w {}", open.display())),
            "{err}"
        );
        // Reached through a symlink from a safe place: the target's path is checked too.
        let safe = dir.path().join("safe");
        std::fs::create_dir(&safe).unwrap();
        symlink(&inner, safe.join("conf")).unwrap();
        let err = check(&safe.join("conf/proxy.toml")).unwrap_err();
        assert!(
            err.contains(&format!("chmod o-w {}", open.display())),
            "{err}"
        );
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused_with_the_chown() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("needs root to give a file away; skipped");
            return;
        }
        let (_dir, file) = layout();
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let err = check(&file).unwrap_err();
        assert!(err.contains("uid 65534"), "{err}");
        assert!(
            err.contains(&format!("chown root {}", file.display())),
            "{err}"
        );
    }

    #[test]
    fn the_pin_store_also_refuses_group_write_the_config_does_not() {
        let (dir, file) = layout();
        chmod(&file, 0o664);
        assert_eq!(check(&file), Ok(()));
        let err = check_as(&file, Protected::PinStore).unwrap_err();
        assert!(
            err.contains(&format!("chmod g-w {}", file.display())),
            "{err}"
        );
        assert!(err.contains("pin store"), "{err}");
        chmod(&file, 0o644);
        chmod(dir.path(), 0o770);
        let err = check_as(&file, Protected::PinStore).unwrap_err();
        assert!(
            err.contains(&format!("chmod g-w {}", dir.path().display())),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_is_left_to_the_reader_to_report() {
        let (dir, _) = layout();
        assert_eq!(check(&dir.path().join("nope/proxy.toml")), Ok(()));
    }
}
