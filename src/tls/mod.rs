//! The trust decision: pins and how they are written ([`pin`], [`rfc1751`]), and
//! the one verifier that checks them inside the TLS handshake ([`verify`]),
//! with the handshake signature checked as [`signature`] says; the client
//! certificate shown to servers that ask for one ([`identity`]); pins learned on
//! first use ([`known_pins`]).

pub mod identity;
pub mod known_pins;
pub mod listener;
pub mod pin;
pub mod rfc1751;
pub mod signature;
pub mod verify;
