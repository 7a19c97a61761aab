//! What this process uses, for the standard `process_*` metrics, on Windows,
//! as Prometheus' own Windows exporters report it: the working set as resident
//! memory, open handles as open descriptors, and Windows' per-process handle
//! limit as their maximum.

use windows_sys::Win32::Foundation::FILETIME;
use windows_sys::Win32::System::ProcessStatus::{K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetProcessHandleCount, GetProcessTimes,
};

use super::Usage;

/// The most handles one Windows process can have (2^24).
const MAX_HANDLES: i64 = 16_777_216;

/// Asks Windows about this process.
#[allow(unsafe_code)]
pub(crate) fn usage() -> Usage {
    // SAFETY: the pseudo handle of the current process needs no closing; every
    // out-parameter is a local of the size the call expects.
    unsafe {
        let me = GetCurrentProcess();
        let mut memory: PROCESS_MEMORY_COUNTERS = std::mem::zeroed();
        let size = std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
        memory.cb = size;
        let resident_bytes = (K32GetProcessMemoryInfo(me, &mut memory, size) != 0)
            .then(|| i64::try_from(memory.WorkingSetSize).unwrap_or(i64::MAX));
        let mut handles = 0u32;
        // A live process always holds handles: 0 means not counted (Wine).
        let open_fds = (GetProcessHandleCount(me, &mut handles) != 0 && handles > 0)
            .then_some(i64::from(handles));
        let zero = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        };
        let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
        let cpu_seconds = (GetProcessTimes(me, &mut created, &mut exited, &mut kernel, &mut user)
            != 0)
            .then(|| seconds(kernel) + seconds(user));
        Usage {
            resident_bytes,
            open_fds,
            max_fds: Some(MAX_HANDLES),
            cpu_seconds,
        }
    }
}

/// A FILETIME duration counts 100-nanosecond intervals.
fn seconds(t: FILETIME) -> f64 {
    ((u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime)) as f64 / 1e7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_handles_and_cpu_time() {
        // Burn a little CPU so the count cannot be zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert_ne!(std::hint::black_box(x), 1);
        let usage = usage();
        assert!(
            usage.resident_bytes.is_some_and(|b| b > 1024 * 1024),
            "{usage:?}"
        );
        // Wine does not count handles (it says 0): unknown there, never 0.
        if super::super::windows::wine::under_wine() {
            assert_eq!(usage.open_fds, None, "{usage:?}");
        } else {
            assert!(usage.open_fds.is_some_and(|n| n > 0), "{usage:?}");
        }
        assert!(usage.cpu_seconds.is_some_and(|s| s > 0.0), "{usage:?}");
    }

    #[test]
    fn a_filetime_is_in_hundreds_of_nanoseconds() {
        let t = FILETIME {
            dwLowDateTime: 25_000_000,
            dwHighDateTime: 0,
        };
        assert_eq!(seconds(t), 2.5);
        let big = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 1,
        };
        assert_eq!(seconds(big), 4_294_967_296.0 / 1e7);
    }
}
