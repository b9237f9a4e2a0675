//! sipfork-load: an open-loop load harness for SIP forking proxies, built on sipfork's own
//! message core.
//!
//! It plays both sides against any proxy address: it registers E extensions × D devices (each
//! device its own UDP socket), places calls at an open-loop rate, plays every device's scripted
//! behaviour (answer, ring, busy, decline, silence, same-millisecond double answers, answers that
//! cross the caller's CANCEL), checks every call (not only counts), classifies every race it
//! provoked, and measures µs latencies in hdrhistograms, among them what SIPp cannot see: how
//! long losing devices keep ringing after the winner answered (CANCEL latency).
//!
//! # Layout
//! - [`scenario`]: the TOML scenario format and the built-in presets.
//! - [`plan`]: a scenario compiled for one run (addresses, open-loop schedule, per-call draws).
//! - [`wire`]: the harness's messages and identifiers; the null reflector's routing hint.
//! - [`agent`]: the callers and devices as one sans-IO state machine (an engine `Handler`).
//! - [`verdict`]: per-call verdicts and the race classifier.
//! - [`metrics`]: hdrhistograms and the per-second timeline.
//! - [`reflect`]: the null reflector (kernel floor in the same run).
//! - [`sim`]: the agents against sipfork's `Core` (or the reflector) on virtual time.
//! - [`result`]: the JSON result file; [`dashboard`]: HTML dashboards; [`cpu`]: process CPU;
//!   [`runner`]: a real run on sockets; [`sweep`]: rate sweeps and their knee; [`merge`]: N
//!   harness instances against one proxy, and their results merged.
#![warn(missing_docs)]

pub mod agent;
pub mod cpu;
pub mod dashboard;
pub mod merge;
pub mod metrics;
pub mod plan;
pub mod reflect;
pub mod result;
pub mod runner;
pub mod scenario;
pub mod sim;
pub mod stream;
pub mod sweep;
pub mod verdict;
pub mod wire;
pub mod ws;
