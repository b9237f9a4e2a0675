//! Scenarios: what the harness plays, from a small TOML file or a built-in preset.
//!
//! A scenario names the load (open-loop call or REGISTER rate, arrival process, bounded duration
//! and count), the topology (E extensions × D devices, each device its own UDP port), what each
//! device does with an INVITE, what the caller does, datagram loss, the registration phase and
//! what the proxy's policy allows (how many 2xx a caller may see). The format is documented in
//! `loadtest/README.md`; every preset is a file in `loadtest/presets/` compiled in.
//!
//! Invariant: a scenario that parses is bounded. `validate` refuses a run without a duration and
//! call limit, rates and counts of zero, and a topology that does not fit the port range.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// A whole scenario.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (a preset's name).
    pub name: String,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Rate, arrival process, bounds.
    pub load: Load,
    /// Extensions and devices.
    pub topology: Topology,
    /// Caller behaviour.
    #[serde(default)]
    pub caller: Caller,
    /// Device behaviours by position within an extension; the last one repeats.
    #[serde(default = "default_devices")]
    pub device: Vec<Device>,
    /// Datagram loss.
    #[serde(default)]
    pub network: Network,
    /// The registration phase before the calls.
    #[serde(default)]
    pub registration: Registration,
    /// What the proxy's policy allows.
    #[serde(default)]
    pub expect: Expect,
}

/// What is generated at the rate.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoadKind {
    /// Forked calls (INVITE to an extension).
    #[default]
    Calls,
    /// Re-REGISTERs of the devices, round robin (after the registration phase).
    Register,
}

/// Arrival process of the open loop.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Arrival {
    /// Evenly spaced, `1/rate` apart.
    #[default]
    Constant,
    /// Exponential gaps with mean `1/rate` (seeded).
    Poisson,
}

/// The open loop.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Calls or REGISTERs.
    #[serde(default)]
    pub kind: LoadKind,
    /// Per second.
    pub rate: f64,
    /// Arrival process.
    #[serde(default)]
    pub arrival: Arrival,
    /// Seconds of generation (the loop stops at whichever of duration and `max` comes first).
    pub duration_s: f64,
    /// Calls (or REGISTERs) at most.
    pub max: u64,
    /// Seconds to wait after the last call started for every call to finish.
    #[serde(default = "default_drain")]
    pub drain_s: f64,
    /// Seed of every random choice (arrivals, delays, loss).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The number call 0 carries in its Call-ID, branch and From tag (call `c` carries
    /// `call_base + c`). A base just below a power of ten brings the moment every call's
    /// identifiers grow by a digit (call 1,000,000 of an hour's soak at 500/s) into the first
    /// minutes of a run.
    #[serde(default)]
    pub call_base: u32,
}

/// Extensions and devices.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Number of extensions called, round robin.
    pub extensions: u32,
    /// Devices (contacts) per extension.
    pub devices: u32,
    /// Number of the first extension (the others follow).
    #[serde(default = "default_first_extension")]
    pub first_extension: u32,
    /// IP of every harness socket (`--local-ip`): an address of this machine from which the
    /// proxy is reachable; IPv4 or IPv6, the target's version.
    #[serde(default = "default_ip")]
    pub ip: IpAddr,
    /// Port of the first device; device `i` (extension-major) listens on `device_port + i`.
    #[serde(default = "default_device_port")]
    pub device_port: u16,
    /// Port of the first caller socket.
    #[serde(default = "default_caller_port")]
    pub caller_port: u16,
    /// Caller sockets; call `c` leaves from caller `c % callers`.
    #[serde(default = "one")]
    pub callers: u32,
    /// Domain in Request-URIs and address-of-records (default: the proxy's IP).
    #[serde(default)]
    pub domain: Option<String>,
    /// Rotate device behaviours by call number, so the answering position moves.
    #[serde(default)]
    pub rotate: bool,
    /// Where the devices register (`--register-at`): device `k` of every extension registers
    /// at `registrars[k % len]`; empty: at the target. Calls still go to the target (a cluster
    /// node whose extensions' devices sit on other nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registrars: Vec<std::net::SocketAddr>,
    /// What the devices and callers talk to the proxy over (`--transport`): UDP (a socket per
    /// device and caller), or one TCP or TLS connection per device and per caller.
    #[serde(default, skip_serializing_if = "Transport::is_udp")]
    pub transport: Transport,
}

/// The harness's transport toward the proxy.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One UDP socket per device and caller.
    #[default]
    Udp,
    /// One TCP connection per device and caller, from its own port.
    Tcp,
    /// TLS on such a connection.
    Tls,
    /// WebSocket on such a connection (RFC 7118), one SIP message per WebSocket message.
    Ws,
    /// WebSocket on TLS.
    Wss,
}

impl Transport {
    /// Whether this is UDP (for serde's `skip_serializing_if`).
    pub fn is_udp(&self) -> bool {
        *self == Transport::Udp
    }

    /// The Via token (RFC 3261 §18.2.1).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The URI parameter of a Contact reached over this transport (`;transport=tcp`; none for
    /// UDP, the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
            // RFC 7118 §5.2: `ws` for WS and WSS alike.
            Transport::Ws | Transport::Wss => ";transport=ws",
        }
    }

    /// sipfork's name for it.
    pub fn core(self) -> sipfork::core::transport::Transport {
        match self {
            Transport::Udp => sipfork::core::transport::Transport::Udp,
            Transport::Tcp => sipfork::core::transport::Transport::Tcp,
            Transport::Tls => sipfork::core::transport::Transport::Tls,
            Transport::Ws => sipfork::core::transport::Transport::Ws,
            Transport::Wss => sipfork::core::transport::Transport::Wss,
        }
    }

    /// Whether it runs on TLS (the harness needs `--tls-ca`, proxy-config `--tls-dir`).
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// Whether it is WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

/// A delay in milliseconds drawn per call.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Dist {
    /// Always this.
    Const(f64),
    /// Uniform in `[low, high]`.
    Uniform(f64, f64),
    /// Exponential with this mean.
    Exp(f64),
}

impl Dist {
    /// The delay in µs for a uniform draw `u` in `[0, 1)`.
    pub fn sample_us(&self, u: f64) -> u64 {
        let ms = match *self {
            Dist::Const(v) => v,
            Dist::Uniform(lo, hi) => lo + (hi - lo) * u,
            Dist::Exp(mean) => -mean * (1.0 - u).max(f64::MIN_POSITIVE).ln(),
        };
        (ms.max(0.0) * 1000.0).round() as u64
    }

    fn check(&self, what: &str) -> Result<(), String> {
        let ok = match *self {
            Dist::Const(v) | Dist::Exp(v) => v.is_finite() && v >= 0.0,
            Dist::Uniform(lo, hi) => lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi,
        };
        ok.then_some(())
            .ok_or_else(|| format!("{what}: delays are milliseconds ≥ 0 (uniform: low ≤ high)"))
    }
}

/// Where a device's delay is measured from.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Anchor {
    /// From the device's receipt of the INVITE.
    #[default]
    Invite,
    /// From the call's intended start (the caller's INVITE send time): lines devices up with
    /// each other and with the caller to the microsecond, which is how races are provoked.
    CallStart,
}

/// What a device does with an INVITE.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// 180, then 200 OK after the delay.
    Answer,
    /// 180 and nothing more (rings until cancelled).
    Ring,
    /// 180, then 486 Busy Here after the delay.
    Busy,
    /// 180, then 603 Decline after the delay.
    Decline,
    /// Nothing at all (a device that never answers, not even 180).
    Silent,
}

/// One device position's behaviour.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// What it does.
    pub action: Action,
    /// Delay of the final answer (answer, busy, decline).
    #[serde(default = "default_answer_after")]
    pub after_ms: Dist,
    /// Delay of the 180 after the INVITE (milliseconds; 0 = at once).
    #[serde(default)]
    pub ring_ms: f64,
    /// What `after_ms` is measured from.
    #[serde(default)]
    pub anchor: Anchor,
    /// Contact q-value to register with (q-group forking), if any.
    #[serde(default)]
    pub q: Option<f32>,
}

/// What the caller does.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Caller {
    /// Hold time after the 2xx before the BYE.
    #[serde(default = "default_hold")]
    pub hold_ms: Dist,
    /// Cancel this long after the call's start if no 2xx arrived by then.
    #[serde(default)]
    pub cancel_after_ms: Option<Dist>,
    /// Fraction of calls that cancel (when `cancel_after_ms` is set).
    #[serde(default = "one_f")]
    pub cancel_fraction: f64,
    /// Answer a 401/407 to the INVITE with the called extension's credentials (the
    /// registration's password template), once per call; the INVITE→x latencies then include
    /// the challenge's round trip.
    #[serde(default)]
    pub digest: bool,
}

impl Default for Caller {
    fn default() -> Self {
        Caller {
            hold_ms: default_hold(),
            cancel_after_ms: None,
            cancel_fraction: 1.0,
            digest: false,
        }
    }
}

/// A direction of traffic, for loss.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Leg {
    /// Caller to proxy.
    CallerOut,
    /// Proxy to caller.
    CallerIn,
    /// Devices to proxy.
    DeviceOut,
    /// Proxy to devices.
    DeviceIn,
}

/// Datagram loss, applied by the harness on its own sends and receives.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Probability that a datagram on a lossy leg is dropped.
    #[serde(default)]
    pub loss: f64,
    /// The lossy legs.
    #[serde(default = "all_legs")]
    pub legs: Vec<Leg>,
    /// RFC 3261 T1 of the harness's own retransmissions, milliseconds.
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            loss: 0.0,
            legs: all_legs(),
            t1_ms: default_t1(),
        }
    }
}

/// The registration phase.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Register the devices before the calls (off: the proxy already knows them).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// REGISTERs per second during the phase.
    #[serde(default = "default_reg_rate")]
    pub rate: f64,
    /// Expires asked for, seconds.
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// First remove every binding of each extension (`Contact: *`, `Expires: 0`).
    #[serde(default = "yes")]
    pub clear: bool,
    /// Answer 401 challenges with digest credentials; re-REGISTERs reuse the nonce with an
    /// increasing nonce-count, as phones do.
    #[serde(default)]
    pub digest: bool,
    /// Password template; `{number}` is the extension.
    #[serde(default = "default_password")]
    pub password: String,
    /// Seconds the phase may take before the run gives up.
    #[serde(default = "default_reg_timeout")]
    pub timeout_s: f64,
    /// A device that did not register does not fail the run (it is then not owed INVITEs).
    #[serde(default)]
    pub allow_failures: bool,
}

impl Default for Registration {
    fn default() -> Self {
        Registration {
            enabled: true,
            rate: default_reg_rate(),
            expires: default_expires(),
            clear: true,
            digest: false,
            password: default_password(),
            timeout_s: default_reg_timeout(),
            allow_failures: false,
        }
    }
}

/// What the proxy's policy allows, for the per-call verdicts.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The proxy ACKs and BYEs late 2xx itself (`single_answer`): the caller sees one 2xx and a
    /// losing device that answered gets a BYE instead of a CANCEL.
    #[serde(default)]
    pub single_answer: bool,
    /// The final status the caller must get when no device answers (486, 603, 480, 487 ...);
    /// unset: any non-2xx.
    #[serde(default)]
    pub final_status: Option<u16>,
    /// The proxy rings at most this many devices of an extension (its `max_branches`): a call
    /// then owes the INVITE to this many of the registered devices rather than to all.
    #[serde(default)]
    pub max_branches: Option<u32>,
}

fn default_devices() -> Vec<Device> {
    vec![Device {
        action: Action::Ring,
        after_ms: default_answer_after(),
        ring_ms: 0.0,
        anchor: Anchor::Invite,
        q: None,
    }]
}
fn default_drain() -> f64 {
    5.0
}
fn default_seed() -> u64 {
    1
}
fn default_first_extension() -> u32 {
    1000
}
fn default_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
fn default_device_port() -> u16 {
    20000
}
fn default_caller_port() -> u16 {
    19000
}
fn one() -> u32 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_answer_after() -> Dist {
    Dist::Const(100.0)
}
fn default_hold() -> Dist {
    Dist::Const(500.0)
}
fn all_legs() -> Vec<Leg> {
    vec![Leg::CallerOut, Leg::CallerIn, Leg::DeviceOut, Leg::DeviceIn]
}
fn default_t1() -> u64 {
    500
}
fn default_reg_rate() -> f64 {
    2000.0
}
fn default_expires() -> u32 {
    3600
}
fn default_password() -> String {
    "pw-{number}".to_owned()
}
fn default_reg_timeout() -> f64 {
    20.0
}

/// The built-in presets: name, TOML text.
pub const PRESETS: &[(&str, &str)] = &[
    ("fork3", include_str!("../presets/fork3.toml")),
    ("fork8", include_str!("../presets/fork8.toml")),
    ("serial", include_str!("../presets/serial.toml")),
    (
        "race-double-answer",
        include_str!("../presets/race-double-answer.toml"),
    ),
    (
        "race-cancel-200",
        include_str!("../presets/race-cancel-200.toml"),
    ),
    (
        "register-storm",
        include_str!("../presets/register-storm.toml"),
    ),
    (
        "register-storm-digest",
        include_str!("../presets/register-storm-digest.toml"),
    ),
    ("lossy", include_str!("../presets/lossy.toml")),
    ("lossy-20", include_str!("../presets/lossy-20.toml")),
];

/// Highest device count per extension (device sets are bit masks of a `u32`).
pub const MAX_DEVICES: u32 = 32;

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// A built-in preset by name.
    pub fn preset(name: &str) -> Result<Scenario, String> {
        let (_, text) = PRESETS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            format!("no preset {name:?}; presets: {}", names.join(", "))
        })?;
        Self::from_toml(text).map_err(|e| format!("preset {name}: {e}"))
    }

    /// The behaviour of device position `k` (the last entry repeats).
    pub fn device(&self, k: u32) -> &Device {
        let i = (k as usize).min(self.device.len().saturating_sub(1));
        &self.device[i]
    }

    /// Refuses what would make a run unbounded or impossible.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.load;
        if !(l.rate.is_finite() && l.rate > 0.0) {
            return Err("load.rate must be > 0".into());
        }
        if !(l.duration_s.is_finite() && l.duration_s > 0.0 && l.duration_s <= 3600.0) {
            return Err("load.duration_s must be in (0, 3600]".into());
        }
        if l.max == 0 || l.max > 50_000_000 {
            return Err("load.max must be in 1..=50000000".into());
        }
        if u64::from(l.call_base) + l.max > u64::from(u32::MAX) {
            return Err("load.call_base + load.max must fit 32 bits".into());
        }
        if !(l.drain_s.is_finite() && (0.0..=600.0).contains(&l.drain_s)) {
            return Err("load.drain_s must be in [0, 600]".into());
        }
        let t = &self.topology;
        if t.extensions == 0 || t.devices == 0 || t.devices > MAX_DEVICES || t.callers == 0 {
            return Err(format!(
                "topology: extensions ≥ 1, devices in 1..={MAX_DEVICES}, callers ≥ 1"
            ));
        }
        if t.ip.is_unspecified() || t.ip.is_multicast() {
            return Err(
                "topology.ip must be one address of this machine (not unspecified or multicast)"
                    .into(),
            );
        }
        let devices = u64::from(t.extensions) * u64::from(t.devices);
        if u64::from(t.device_port) + devices > 65_535 {
            return Err(format!(
                "topology: {devices} devices from port {} do not fit below 65536",
                t.device_port
            ));
        }
        let callers_end = u32::from(t.caller_port) + t.callers;
        let devices_end = u64::from(t.device_port) + devices;
        if u64::from(t.caller_port) < devices_end
            && u64::from(callers_end) > u64::from(t.device_port)
        {
            return Err("topology: caller ports overlap device ports".into());
        }
        if self.device.is_empty() {
            return Err("at least one [[device]] entry".into());
        }
        for (i, d) in self.device.iter().enumerate() {
            d.after_ms.check(&format!("device[{i}].after_ms"))?;
            if !(d.ring_ms.is_finite() && d.ring_ms >= 0.0) {
                return Err(format!("device[{i}].ring_ms must be ≥ 0"));
            }
        }
        self.caller.hold_ms.check("caller.hold_ms")?;
        if let Some(c) = &self.caller.cancel_after_ms {
            c.check("caller.cancel_after_ms")?;
        }
        if !(0.0..=1.0).contains(&self.caller.cancel_fraction) {
            return Err("caller.cancel_fraction must be in [0, 1]".into());
        }
        if !(0.0..1.0).contains(&self.network.loss) {
            return Err("network.loss must be in [0, 1)".into());
        }
        if self.network.loss > 0.0 && !t.transport.is_udp() {
            return Err(
                "network.loss models UDP: a TCP or TLS stream does not lose messages".into(),
            );
        }
        if !(1..=10_000).contains(&self.network.t1_ms) {
            return Err("network.t1_ms must be in 1..=10000".into());
        }
        let r = &self.registration;
        if !(r.rate.is_finite() && r.rate > 0.0) || r.expires == 0 {
            return Err("registration.rate must be > 0 and expires ≥ 1".into());
        }
        if !(r.timeout_s.is_finite() && r.timeout_s > 0.0 && r.timeout_s <= 600.0) {
            return Err("registration.timeout_s must be in (0, 600]".into());
        }
        if l.kind == LoadKind::Register && !r.enabled {
            return Err("a register load needs the registration phase".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_is_bounded() {
        for (name, _) in PRESETS {
            let s = Scenario::preset(name).unwrap();
            assert_eq!(&s.name, name);
            assert!(
                s.load.duration_s <= 60.0,
                "{name}: recorded runs stay ≤ 60 s"
            );
        }
    }

    #[test]
    fn a_minimal_file_gets_defaults_and_the_last_device_repeats() {
        let s = Scenario::from_toml(
            r#"
name = "mini"
[load]
rate = 10
duration_s = 2
max = 20
[topology]
extensions = 2
devices = 3
[[device]]
action = "answer"
after_ms = { uniform = [50, 150] }
anchor = "call-start"
[[device]]
action = "busy"
"#,
        )
        .unwrap();
        assert_eq!(s.load.arrival, Arrival::Constant);
        assert_eq!(s.device(0).action, Action::Answer);
        assert_eq!(s.device(0).anchor, Anchor::CallStart);
        assert_eq!(s.device(1).action, Action::Busy);
        assert_eq!(s.device(2).action, Action::Busy, "the last entry repeats");
        assert_eq!(s.device(1).after_ms, Dist::Const(100.0));
        assert_eq!(s.caller.hold_ms, Dist::Const(500.0));
        assert_eq!(s.network.legs.len(), 4);
        assert!(s.registration.enabled && s.registration.clear);
    }

    #[test]
    fn unbounded_or_impossible_scenarios_are_refused_with_the_key() {
        let base = Scenario::preset("fork3").unwrap();
        let mut s = base.clone();
        s.load.rate = 0.0;
        assert!(s.validate().unwrap_err().contains("load.rate"));
        let mut s = base.clone();
        s.topology.devices = 40;
        assert!(s.validate().unwrap_err().contains("devices"));
        let mut s = base.clone();
        s.topology.ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert!(s.validate().unwrap_err().contains("topology.ip"));
        let mut s = base.clone();
        s.topology.extensions = 60_000;
        assert!(s.validate().unwrap_err().contains("do not fit"));
        let mut s = base;
        s.network.loss = 1.0;
        assert!(s.validate().unwrap_err().contains("network.loss"));
        let typo = "name = \"x\"\n[load]\nrate = 1\nduration_s = 1\nmax = 1\nrat = 2\n\
                    [topology]\nextensions = 1\ndevices = 1\n";
        assert!(Scenario::from_toml(typo).unwrap_err().contains("rat"));
    }

    #[test]
    fn distributions_sample_in_range() {
        assert_eq!(Dist::Const(100.0).sample_us(0.7), 100_000);
        assert_eq!(Dist::Uniform(50.0, 150.0).sample_us(0.0), 50_000);
        assert_eq!(Dist::Uniform(50.0, 150.0).sample_us(0.5), 100_000);
        let mean: f64 = (0..10_000)
            .map(|i| Dist::Exp(20.0).sample_us((f64::from(i) + 0.5) / 10_000.0) as f64)
            .sum::<f64>()
            / 10_000.0;
        assert!((mean - 20_000.0).abs() < 500.0, "exp mean {mean}");
    }
}
