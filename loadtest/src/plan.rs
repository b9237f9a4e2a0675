//! A scenario compiled for one run: every address, the open-loop schedule, and the per-call
//! random choices.
//!
//! Every random choice about call `c` (delays, hold time, whether it cancels) is a pure function
//! of `(seed, c, device, purpose)`, so the caller side and the device side, which may run on
//! different threads, agree on them without talking, and a run replays exactly from its seed.
//!
//! Invariant: `starts` is non-decreasing and bounded by the scenario's duration and count.

use std::net::{IpAddr, SocketAddr};

use crate::reflect::ProxySizes;
use crate::scenario::{Arrival, Device, Scenario};

/// Which harness socket an address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Caller socket `i`.
    Caller(u32),
    /// Device `d` (global index: extension-major, `e * D + k`).
    Device(u32),
}

/// What a per-call random draw is for (keeps draws independent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// A device's answer delay.
    Answer = 1,
    /// The caller's hold time.
    Hold = 2,
    /// The caller's cancel time.
    CancelAfter = 3,
    /// Whether the caller cancels at all.
    CancelCoin = 4,
}

/// The compiled run plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// Random per run; in every Call-ID, so a stray datagram of an earlier run is recognised.
    pub run_id: u32,
    /// Where every request goes: the proxy, or the null reflector.
    pub target: SocketAddr,
    /// Reflector mode: messages carry routing hints and answers are read from them.
    pub reflect: bool,
    /// Domain of Request-URIs and address-of-records.
    pub domain: String,
    /// Caller sockets.
    pub callers: Vec<SocketAddr>,
    /// Device sockets, extension-major.
    pub devices: Vec<SocketAddr>,
    /// Intended start of each generated call (or REGISTER), µs after the load phase starts.
    pub starts: Vec<u64>,
    /// Reflector mode: sizes of what a forking proxy sends (see `reflect.rs`).
    pub sizes: ProxySizes,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser: a good 64-bit mixer, deterministic everywhere.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small seeded generator (for arrivals and loss), splitmix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed))
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        (mix(self.0) >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

impl Plan {
    /// Compiles `scenario` against `target` (the proxy's or the reflector's address).
    pub fn new(
        scenario: Scenario,
        target: SocketAddr,
        reflect: bool,
        run_id: u32,
    ) -> Result<Plan, String> {
        scenario.validate()?;
        let t = &scenario.topology;
        if target.ip().is_unspecified() || target.ip().is_multicast() || target.port() == 0 {
            return Err(format!("target {target} is not a unicast address and port"));
        }
        if target.is_ipv4() != t.ip.is_ipv4() {
            return Err(format!(
                "target {target} and the harness's address {} (--local-ip) are not of one IP version",
                t.ip
            ));
        }
        if reflect && !t.ip.is_ipv4() {
            return Err("reflector mode runs on IPv4 only".into());
        }
        if reflect && !t.registrars.is_empty() {
            return Err("reflector mode registers at the target only (no --register-at)".into());
        }
        if let Some(r) = t.registrars.iter().find(|r| r.is_ipv4() != t.ip.is_ipv4()) {
            return Err(format!(
                "registrar {r} and the harness's address {} (--local-ip) are not of one IP version",
                t.ip
            ));
        }
        let ip = t.ip;
        let callers = (0..t.callers)
            .map(|i| SocketAddr::new(ip, t.caller_port + i as u16))
            .collect();
        let devices = (0..t.extensions * t.devices)
            .map(|i| SocketAddr::new(ip, t.device_port + i as u16))
            .collect();
        let domain = t.domain.clone().unwrap_or_else(|| match target.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
        let starts = schedule(&scenario);
        Ok(Plan {
            scenario,
            run_id,
            target,
            reflect,
            domain,
            callers,
            devices,
            starts,
            sizes: ProxySizes::default(),
        })
    }

    /// Calls (or REGISTERs) this run generates.
    pub fn count(&self) -> u32 {
        self.starts.len() as u32
    }

    /// Devices per extension.
    pub fn width(&self) -> u32 {
        self.scenario.topology.devices
    }

    /// Where global device `d` registers: `registrars[(d % width) % len]`, else the target.
    pub fn registrar(&self, d: u32) -> SocketAddr {
        let r = &self.scenario.topology.registrars;
        if r.is_empty() {
            self.target
        } else {
            r[(d % self.width()) as usize % r.len()]
        }
    }

    /// The extension (0-based) call `c` goes to.
    pub fn extension_of(&self, c: u32) -> u32 {
        c % self.scenario.topology.extensions
    }

    /// The number call `c` carries in its Call-ID, branches and From tag (`load.call_base + c`).
    pub fn call_number(&self, c: u32) -> u32 {
        self.scenario.load.call_base.wrapping_add(c)
    }

    /// The number dialled for extension `e`.
    pub fn number(&self, e: u32) -> u32 {
        self.scenario.topology.first_extension + e
    }

    /// Global index of device `k` of extension `e`.
    pub fn device_index(&self, e: u32, k: u32) -> u32 {
        e * self.width() + k
    }

    /// The caller socket of call `c`.
    pub fn caller_of(&self, c: u32) -> u32 {
        c % self.scenario.topology.callers
    }

    /// Which harness socket `local` is.
    pub fn endpoint(&self, local: SocketAddr) -> Option<Endpoint> {
        let t = &self.scenario.topology;
        if local.ip() != t.ip {
            return None;
        }
        let port = u32::from(local.port());
        let device_port = u32::from(t.device_port);
        let caller_port = u32::from(t.caller_port);
        if port >= device_port && port - device_port < self.devices.len() as u32 {
            Some(Endpoint::Device(port - device_port))
        } else if port >= caller_port && port - caller_port < t.callers {
            Some(Endpoint::Caller(port - caller_port))
        } else {
            None
        }
    }

    /// The behaviour position of device `k` in call `c` (rotated when the scenario says so).
    pub fn position(&self, c: u32, k: u32) -> u32 {
        if self.scenario.topology.rotate {
            (k + c) % self.width()
        } else {
            k
        }
    }

    /// What device `k` does in call `c`.
    pub fn behaviour(&self, c: u32, k: u32) -> &Device {
        self.scenario.device(self.position(c, k))
    }

    /// A uniform draw in `[0, 1)` for `(c, k, purpose)`, the same on every thread.
    pub fn draw(&self, c: u32, k: u32, purpose: Purpose) -> f64 {
        let key = mix(self.scenario.load.seed)
            ^ mix(u64::from(c) << 8 | u64::from(k) << 3 | purpose as u64);
        (mix(key) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Device `k`'s final-answer delay in call `c`, µs.
    pub fn answer_delay_us(&self, c: u32, k: u32) -> u64 {
        let u = self.draw(c, k, Purpose::Answer);
        self.behaviour(c, k).after_ms.sample_us(u)
    }

    /// The caller's hold time in call `c`, µs.
    pub fn hold_us(&self, c: u32) -> u64 {
        self.scenario
            .caller
            .hold_ms
            .sample_us(self.draw(c, 0, Purpose::Hold))
    }

    /// When (µs after its start) the caller of call `c` cancels, if it does.
    pub fn cancel_after_us(&self, c: u32) -> Option<u64> {
        let caller = &self.scenario.caller;
        let dist = caller.cancel_after_ms?;
        (self.draw(c, 0, Purpose::CancelCoin) < caller.cancel_fraction)
            .then(|| dist.sample_us(self.draw(c, 0, Purpose::CancelAfter)))
    }

    /// The password of extension `e`.
    pub fn password(&self, e: u32) -> String {
        self.scenario
            .registration
            .password
            .replace("{number}", &self.number(e).to_string())
    }
}

/// The open-loop schedule: intended start offsets in µs, bounded by duration and count.
fn schedule(s: &Scenario) -> Vec<u64> {
    let l = &s.load;
    let end_us = (l.duration_s * 1e6) as u64;
    let gap_us = 1e6 / l.rate;
    let mut rng = Rng::new(l.seed ^ 0xa771_7a15);
    let mut starts = Vec::with_capacity(l.max.min(1 << 24) as usize);
    let mut t = 0.0f64;
    while (starts.len() as u64) < l.max {
        let at = t.round() as u64;
        if at >= end_us {
            break;
        }
        starts.push(at);
        t += match l.arrival {
            Arrival::Constant => gap_us,
            Arrival::Poisson => -gap_us * (1.0 - rng.unit()).max(f64::MIN_POSITIVE).ln(),
        };
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(arrival: Arrival) -> Plan {
        let mut s = Scenario::preset("fork3").unwrap();
        s.load.rate = 1000.0;
        s.load.duration_s = 2.0;
        s.load.max = 100_000;
        s.load.arrival = arrival;
        Plan::new(s, "127.0.0.1:5060".parse().unwrap(), false, 7).unwrap()
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced_and_bounded_by_duration_and_count() {
        let p = plan(Arrival::Constant);
        assert_eq!(p.count(), 2000);
        assert_eq!(&p.starts[..3], &[0, 1000, 2000]);
        let mut s = p.scenario.clone();
        s.load.max = 10;
        let p = Plan::new(s, p.target, false, 7).unwrap();
        assert_eq!(p.count(), 10);
    }

    #[test]
    fn poisson_arrivals_have_the_rate_on_average_and_never_go_back() {
        let p = plan(Arrival::Poisson);
        let n = p.count() as f64;
        assert!(
            (1850.0..2150.0).contains(&n),
            "{n} arrivals in 2 s at 1000/s"
        );
        assert!(p.starts.windows(2).all(|w| w[0] <= w[1]));
        let gaps: Vec<u64> = p.starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().any(|&g| g < 200) && gaps.iter().any(|&g| g > 2500));
    }

    #[test]
    fn endpoints_map_back_from_addresses() {
        let p = plan(Arrival::Constant);
        assert_eq!(p.devices.len(), 3000);
        assert_eq!(p.endpoint(p.devices[0]), Some(Endpoint::Device(0)));
        assert_eq!(p.endpoint(p.devices[2999]), Some(Endpoint::Device(2999)));
        assert_eq!(p.endpoint(p.callers[0]), Some(Endpoint::Caller(0)));
        assert_eq!(p.endpoint("127.0.0.1:5060".parse().unwrap()), None);
        assert_eq!(p.endpoint("127.0.0.2:20000".parse().unwrap()), None);
        assert_eq!(p.device_index(p.extension_of(1001), 2), 5);
    }

    #[test]
    fn devices_register_at_the_target_or_round_robin_over_the_registrars() {
        let p = plan(Arrival::Constant);
        assert_eq!(p.registrar(4), p.target);
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5060".parse().unwrap(),
            "127.0.0.2:5060".parse().unwrap(),
        );
        let mut s = p.scenario.clone();
        s.topology.registrars = vec![b, a];
        let p = Plan::new(s.clone(), a, false, 7).unwrap();
        // Device k of every extension (3 each): k 0 and 2 at B, k 1 at A.
        let got: Vec<SocketAddr> = (0..6).map(|d| p.registrar(d)).collect();
        assert_eq!(got, [b, a, b, b, a, b]);
        assert!(Plan::new(s, a, true, 7).is_err(), "not in reflector mode");
    }

    #[test]
    fn per_call_draws_are_deterministic_and_independent() {
        let p = plan(Arrival::Constant);
        assert_eq!(p.draw(5, 1, Purpose::Answer), p.draw(5, 1, Purpose::Answer));
        assert_ne!(p.draw(5, 1, Purpose::Answer), p.draw(5, 2, Purpose::Answer));
        assert_ne!(
            p.draw(5, 0, Purpose::Hold),
            p.draw(5, 0, Purpose::CancelAfter)
        );
        let mean = (0..10_000)
            .map(|c| p.draw(c, 0, Purpose::Hold))
            .sum::<f64>()
            / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02);
        assert_eq!(p.answer_delay_us(3, 0), 100_000);
        assert_eq!(p.hold_us(3), 500_000);
        assert_eq!(p.cancel_after_us(3), None);
    }
}
