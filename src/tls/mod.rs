//! The trust decision: pins and how they are written ([`pin`], [`rfc1751`]), and
//! the one verifier that checks them inside the TLS handshake ([`verify`]),
//! with the handshake signature checked as [`signature`] says.

pub mod pin;
pub mod rfc1751;
pub mod signature;
pub mod verify;
