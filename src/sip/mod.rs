//! SIP messages: bytes to borrowed views and back (RFC 3261 sections 7, 18.3, 19, 20, 25).
#![forbid(unsafe_code)]
