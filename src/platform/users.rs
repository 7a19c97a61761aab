//! Local users and groups by name and number (the password and group
//! databases, NSS included), for `allowed_users`, `socket_group` and log lines.

/// The uid of the user called `name`; `Ok(None)` when there is none.
pub(crate) fn user_id(name: &str) -> Result<Option<u32>, String> {
    nix::unistd::User::from_name(name)
        .map(|user| user.map(|u| u.uid.as_raw()))
        .map_err(|e| e.to_string())
}

/// The gid of the group called `name`; `Ok(None)` when there is none.
pub(crate) fn group_id(name: &str) -> Result<Option<u32>, String> {
    nix::unistd::Group::from_name(name)
        .map(|group| group.map(|g| g.gid.as_raw()))
        .map_err(|e| e.to_string())
}

/// How a user is named in refusals and log lines: `uid 1000`.
pub(crate) fn label(uid: u32) -> String {
    format!("uid {uid}")
}

/// The name of user `uid`, if it has one.
pub(crate) fn name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}
