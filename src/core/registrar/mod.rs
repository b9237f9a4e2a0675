//! Registrar (RFC 3261 §10.3): bindings of extensions to devices, and digest authentication.
//!
//! Only [`digest`] exists so far; the location table and REGISTER handling come next.

pub mod digest;
