//! What this process uses, for the standard `process_*` metrics, on Windows:
//! nothing is read yet.

use super::Usage;

/// Nothing known.
pub(crate) fn usage() -> Usage {
    Usage::default()
}
