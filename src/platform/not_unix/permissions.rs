//! Where files have no Unix owners and modes (Windows), this stands in for
//! `platform/permissions.rs`. pinproxy does not claim to check who could have
//! written the config there: Windows' access control lists are not checked
//! (SECURITY.md, "On Windows", says what to do instead: keep the config under
//! `%ProgramData%\pinproxy`, whose inherited ACL lets only Administrators and
//! SYSTEM write).

use std::path::Path;

/// What a checked file is (the Unix rules differ by kind; none apply here).
// Named by callers on every platform; only the Unix rules tell them apart.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protected {
    /// The config file (and files it names, such as a client key).
    Config,
    /// The `known_pins` file pinproxy writes.
    PinStore,
}

/// Not checked on this platform (see the module's documentation).
pub fn check(_path: &Path) -> Result<(), String> {
    Ok(())
}

/// Not checked on this platform (see the module's documentation).
pub fn check_as(_path: &Path, _what: Protected) -> Result<(), String> {
    Ok(())
}

/// No mode bits here to say so.
pub(crate) fn readable_by_everyone(_path: &Path) -> Option<u32> {
    None
}

/// New files inherit their directory's ACL.
pub(crate) fn owner_only(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    options
}

/// Creating the file reports a directory that cannot be written.
pub(crate) fn can_write_dir(_dir: &Path) -> bool {
    true
}
