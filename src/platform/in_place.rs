//! Boxes a value where it is made.
//!
//! `Box::pin(make())` makes the value on the stack and then copies it to the
//! heap, and the futures of the request path are kilobytes (a request's is
//! ~4.2 KB, hyper's connection ~2 KB), most of it room for later states. Taking
//! the memory first lets the compiler have `make` write straight into it (the
//! callee's return slot is the heap), so the copy goes. Every connection and
//! request goes through it, so the integration tests are its tests.

use std::pin::Pin;

/// `make()`, pinned in a box of its own, made in place where the compiler can.
#[inline(always)]
pub(crate) fn boxed<T>(make: impl FnOnce() -> T) -> Pin<Box<T>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
