//! Replacing a file the operator owns (the config, by `pins add`) so that a
//! reader sees either the old text or the new one, never half of it, and the
//! file keeps its owner, group and mode: a temporary file beside it, synced,
//! renamed over it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` as `path`'s new content. A symlink is followed, so a link
/// into a managed directory stays a link and its target changes.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let target: PathBuf =
        fs::canonicalize(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let old =
        fs::metadata(&target).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.pinproxy-{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        // No wider than the original from the first byte on.
        let mut file = super::permissions::owner_only(&mut options).open(&temporary)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))?;
        }
        fs::set_permissions(&temporary, old.permissions())?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &target)?;
        sync_dir(dir)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(|e| {
        format!(
            "cannot write {}: {e} (the file is unchanged)",
            target.display()
        )
    })
}

/// Makes a rename in `dir` durable. On Unix the directory is synced like a
/// file; Windows' NTFS journals the rename itself (and a directory cannot be
/// opened as a file there).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_new_text_arrives_whole_with_the_old_mode_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("proxy.toml");
        fs::write(&real, "old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        replace(&link, b"new").unwrap();
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }
}
