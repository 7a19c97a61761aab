//! Windows accounts where Unix has users: `allowed_users` names an account
//! (`NAME`, `DOMAIN\NAME` or a SID such as `S-1-5-21-…-1001`), and a client's
//! account is the user of the process token that owns its socket.
//!
//! The rest of pinproxy knows a user by a number (a uid on Unix). A SID is
//! not a number, so each SID pinproxy meets gets one here, for the life of the
//! process: the same SID always the same number, two SIDs never the same one.
//! The numbers mean nothing outside this process; log lines and refusals name
//! the account ([`label`]). Windows has no groups for sockets: `group_id` is an
//! error, which the config reports.

use std::io;
use std::sync::Mutex;

use windows_sys::core::PWSTR;
use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::{ConvertSidToStringSidW, ConvertStringSidToSidW};
use windows_sys::Win32::Security::{
    GetLengthSid, GetTokenInformation, IsValidSid, LookupAccountNameW, LookupAccountSidW,
    TokenUser, PSID, SID_NAME_USE, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Threading::{
    OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

/// Every SID met so far, in the order met; a SID's number is `FIRST` + its place.
static KNOWN: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Far from 0 (root on Unix) and from the small numbers people type.
const FIRST: u32 = 0x4000_0000;
/// Accounts on one machine are few; a bound keeps a flood of strange tokens
/// from growing the table (an account past it is unknown, so refused).
const MAX_KNOWN: usize = 4096;

/// The number of `sid` (binary form), given it on first sight.
fn number_of(sid: &[u8]) -> Option<u32> {
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let place = match known.iter().position(|s| s == sid) {
        Some(place) => place,
        None if known.len() < MAX_KNOWN => {
            known.push(sid.to_vec());
            known.len() - 1
        }
        None => return None,
    };
    FIRST.checked_add(u32::try_from(place).ok()?)
}

/// The SID (binary form) numbered `uid`.
fn sid_of(uid: u32) -> Option<Vec<u8>> {
    let place = usize::try_from(uid.checked_sub(FIRST)?).ok()?;
    let known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    known.get(place).cloned()
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(std::iter::once(0)).collect()
}

/// Copies the SID at `sid` out of Windows' memory.
///
/// # Safety
/// `sid` must point to a SID that stays valid during the call.
#[allow(unsafe_code)]
unsafe fn copy_sid(sid: PSID) -> Option<Vec<u8>> {
    // SAFETY: the caller guarantees `sid` points to a SID; IsValidSid checks its
    // header before GetLengthSid reads its length from it.
    unsafe {
        if IsValidSid(sid) == 0 {
            return None;
        }
        let len = usize::try_from(GetLengthSid(sid)).ok()?;
        Some(std::slice::from_raw_parts(sid.cast::<u8>(), len).to_vec())
    }
}

/// The number of the account called `name` (`NAME`, `DOMAIN\NAME`, or a SID
/// string); `Ok(None)` when Windows knows no such account.
#[allow(unsafe_code)]
pub(crate) fn user_id(name: &str) -> Result<Option<u32>, String> {
    if name.starts_with("S-1-") {
        let text = wide(name);
        let mut sid: PSID = std::ptr::null_mut();
        // SAFETY: `text` is NUL-terminated; on success Windows allocates the SID
        // with LocalAlloc, which is freed below once copied.
        let copied = unsafe {
            if ConvertStringSidToSidW(text.as_ptr(), &mut sid) == 0 {
                return Err(format!("{name:?} is not a SID (S-1-5-21-…)"));
            }
            let copied = copy_sid(sid);
            LocalFree(sid.cast());
            copied
        };
        let sid = copied.ok_or_else(|| format!("{name:?} is not a valid SID"))?;
        return number_of(&sid)
            .map(Some)
            .ok_or_else(|| "too many accounts".to_string());
    }
    let text = wide(name);
    let (mut sid, mut domain) = (vec![0u8; 68], vec![0u16; 256]);
    loop {
        let (mut sid_len, mut domain_len) = (sid.len() as u32, domain.len() as u32);
        let mut kind: SID_NAME_USE = 0;
        // SAFETY: both buffers are as long as the lengths passed with them;
        // Windows writes at most that much and says how much it needed.
        let found = unsafe {
            LookupAccountNameW(
                std::ptr::null(),
                text.as_ptr(),
                sid.as_mut_ptr().cast(),
                &mut sid_len,
                domain.as_mut_ptr(),
                &mut domain_len,
                &mut kind,
            )
        };
        if found != 0 {
            // SAFETY: on success `sid` holds a SID.
            let sid = unsafe { copy_sid(sid.as_mut_ptr().cast()) }
                .ok_or_else(|| format!("{name:?}: Windows returned an invalid SID"))?;
            return number_of(&sid)
                .map(Some)
                .ok_or_else(|| "too many accounts".to_string());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // ERROR_INSUFFICIENT_BUFFER: the lengths now say what is needed.
            Some(122) if sid_len as usize > sid.len() || domain_len as usize > domain.len() => {
                sid.resize(sid_len as usize, 0);
                domain.resize(domain_len as usize, 0);
            }
            // ERROR_NONE_MAPPED: no such account.
            Some(1332) => return Ok(None),
            _ => return Err(e.to_string()),
        }
    }
}

/// Sockets have no group on Windows.
pub(crate) fn group_id(_: &str) -> Result<Option<u32>, String> {
    Err("there are no socket groups on Windows".to_string())
}

/// The name of account `uid` (`DOMAIN\NAME`), or its SID string when it has none.
#[allow(unsafe_code)]
pub(crate) fn name(uid: u32) -> Option<String> {
    let mut sid = sid_of(uid)?;
    let (mut name, mut domain) = (vec![0u16; 256], vec![0u16; 256]);
    let (mut name_len, mut domain_len) = (name.len() as u32, domain.len() as u32);
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: `sid` holds a SID copied from Windows; both buffers are as long
    // as the lengths passed with them.
    let found = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            sid.as_mut_ptr().cast(),
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if found != 0 {
        let name = String::from_utf16_lossy(&name[..name_len as usize]);
        let domain = String::from_utf16_lossy(&domain[..domain_len as usize]);
        return Some(if domain.is_empty() {
            name
        } else {
            format!("{domain}\\{name}")
        });
    }
    let mut text: PWSTR = std::ptr::null_mut();
    // SAFETY: on success Windows allocates a NUL-terminated string with
    // LocalAlloc, read up to its NUL and freed here.
    unsafe {
        if ConvertSidToStringSidW(sid.as_mut_ptr().cast(), &mut text) == 0 {
            return None;
        }
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        let string = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text.cast());
        Some(string)
    }
}

/// How a user is named in refusals and log lines: `user DOMAIN\NAME`.
pub(crate) fn label(uid: u32) -> String {
    match name(uid) {
        Some(name) => format!("user {name}"),
        None => "an account unknown to Windows".to_string(),
    }
}

/// A handle closed when dropped.
struct Handle(HANDLE);

impl Drop for Handle {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the handle came from Windows and is closed once, here.
        unsafe {
            CloseHandle(self.0);
        }
    }
}

/// An open process, for as long as this lives: while it does, Windows does not
/// give its process id to another process.
pub(crate) struct Process(Handle);

impl Process {
    /// Opens process `pid` to read its token.
    #[allow(unsafe_code)]
    pub(crate) fn open(pid: u32) -> io::Result<Process> {
        // SAFETY: a plain call; a null handle means failure.
        let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if handle.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Process(Handle(handle)))
    }

    /// The number of the account the process runs as (its token's user).
    #[allow(unsafe_code)]
    pub(crate) fn user(&self) -> io::Result<u32> {
        let mut token: HANDLE = std::ptr::null_mut();
        // SAFETY: the process handle is open; on success `token` is a handle we close.
        if unsafe { OpenProcessToken(self.0 .0, TOKEN_QUERY, &mut token) } == 0 {
            return Err(io::Error::last_os_error());
        }
        let token = Handle(token);
        // TOKEN_USER and the SID after it; u64 keeps the pointer in it aligned.
        let mut buf = vec![0u64; 64];
        let mut needed = 0u32;
        loop {
            let len = (buf.len() * 8) as u32;
            // SAFETY: `buf` is `len` bytes long; Windows writes at most that much.
            let ok = unsafe {
                GetTokenInformation(
                    token.0,
                    TokenUser,
                    buf.as_mut_ptr().cast(),
                    len,
                    &mut needed,
                )
            };
            if ok != 0 {
                break;
            }
            let e = io::Error::last_os_error();
            // ERROR_INSUFFICIENT_BUFFER
            if e.raw_os_error() == Some(122) && needed > len {
                buf.resize((needed as usize).div_ceil(8), 0);
                continue;
            }
            return Err(e);
        }
        // SAFETY: on success `buf` starts with a TOKEN_USER whose SID pointer
        // points into `buf`, which lives until the copy is made.
        let sid = unsafe {
            let user = &*buf.as_ptr().cast::<TOKEN_USER>();
            copy_sid(user.User.Sid)
        };
        let sid = sid.ok_or_else(|| io::Error::other("the process token has no valid user SID"))?;
        number_of(&sid).ok_or_else(|| io::Error::other("too many accounts seen"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sid_one_number_and_back() {
        // S-1-5-18 is LocalSystem on every Windows.
        let system = user_id("S-1-5-18").unwrap().unwrap();
        assert_eq!(user_id("S-1-5-18").unwrap(), Some(system));
        let local_service = user_id("S-1-5-19").unwrap().unwrap();
        assert_ne!(system, local_service);
        assert!(system >= FIRST);
        assert!(name(system).is_some_and(|n| n.contains("SYSTEM") || n == "S-1-5-18"));
        assert_eq!(name(FIRST - 1), None);
    }

    #[test]
    fn a_string_that_is_not_a_sid_says_so() {
        let err = user_id("S-1-nonsense").unwrap_err();
        assert!(err.contains("not a SID"), "{err}");
    }

    #[test]
    fn this_process_runs_as_an_account_we_can_name() {
        let me = Process::open(std::process::id()).unwrap().user().unwrap();
        assert!(name(me).is_some());
    }
}
