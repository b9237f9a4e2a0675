//! The engine: threads, sockets, clocks and rings around the sans-IO core.

pub mod persist;
