//! Where there are no Unix users and groups (Windows), this stands in for
//! `platform/users.rs`: names do not resolve to uids or gids, which the config
//! reports where a key needs one.

/// No uids here.
pub(crate) fn user_id(_: &str) -> Result<Option<u32>, String> {
    Err(format!(
        "there are no Unix user ids on {}",
        std::env::consts::OS
    ))
}

/// No gids here.
pub(crate) fn group_id(_: &str) -> Result<Option<u32>, String> {
    Err(format!(
        "there are no Unix group ids on {}",
        std::env::consts::OS
    ))
}

/// No uid has a name here.
pub(crate) fn name(_: u32) -> Option<String> {
    None
}
