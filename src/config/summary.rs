//! What `sipfork check-config` prints: the settings that would run, in operator terms.

use std::fmt;

use super::{AuthMode, Config, Domain, ForkMode, IoBackend, NatMode, OnLimit, PinCores};

/// What `check-config` prints: what would run.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.server;
        writeln!(f, "sipfork would run:")?;
        writeln!(f, "  listen        udp {}", s.listen)?;
        let mut domains: Vec<String> = s.domains.iter().map(Domain::to_string).collect();
        domains.push(format!("{} (listen IP)", s.listen.ip()));
        writeln!(f, "  domains       {}", domains.join(", "))?;
        let pinning = match &s.pin_cores {
            PinCores::Off => "threads float".to_owned(),
            PinCores::PerShard => "pinned one per CPU".to_owned(),
            PinCores::Cpus(cpus) => {
                format!(
                    "pinned to CPUs {}",
                    cpus.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        writeln!(f, "  shards        {} ({pinning})", s.shards)?;
        let io = match s.io {
            IoBackend::Auto => "auto (io_uring if the probe succeeds, else recvmmsg)",
            IoBackend::Uring => "io_uring",
            IoBackend::Mmsg => "recvmmsg/sendmmsg",
            IoBackend::Xdp => "AF_XDP",
        };
        writeln!(f, "  io            {io}")?;
        writeln!(
            f,
            "  sockets       {} KiB buffers, coalescing {}",
            s.socket_buffer >> 10,
            if s.coalesce.is_zero() {
                "off".to_owned()
            } else {
                format!("up to {} µs", s.coalesce.as_micros())
            }
        )?;
        match &s.admin {
            Some(admin) => writeln!(
                f,
                "  admin         http://{admin}/ (POST /reload {})",
                if s.admin_token.is_some() {
                    "with the bearer token"
                } else {
                    "refused: no admin_token; SIGHUP reloads"
                }
            )?,
            None => writeln!(f, "  admin         off")?,
        }
        match s.drain.as_secs() {
            0 => writeln!(f, "  on SIGTERM    stop at once")?,
            n => writeln!(
                f,
                "  on SIGTERM    drain: new INVITEs get 503, calls in progress get up to {n} s"
            )?,
        }
        match &s.data_dir {
            Some(dir) => writeln!(f, "  persistence   bindings journal in {}", dir.display())?,
            None => writeln!(
                f,
                "  persistence   none (registrations are lost on restart)"
            )?,
        }
        let r = &self.registrar;
        writeln!(
            f,
            "  registrar     up to {} devices per extension ({}), expires {}..{} s (default {} s), nat {}",
            r.max_contacts,
            match r.on_limit {
                OnLimit::Reject => "then 403",
                OnLimit::EvictOldest => "then the oldest is evicted",
            },
            r.min_expires.as_secs(),
            r.max_expires.as_secs(),
            r.default_expires.as_secs(),
            match r.nat {
                NatMode::Auto => "auto",
                NatMode::Flow => "flow",
                NatMode::Contact => "contact",
            }
        )?;
        let a = &self.auth;
        match a.mode {
            AuthMode::None => writeln!(f, "  auth          none (nothing is challenged)")?,
            AuthMode::Digest => writeln!(
                f,
                "  auth          digest, realm \"{}\", {}, nonces valid {} s",
                a.realm,
                a.algorithms
                    .iter()
                    .map(|x| x.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                a.nonce_ttl.as_secs()
            )?,
        }
        let p = &self.proxy;
        writeln!(
            f,
            "  proxy         {} fork, up to {} branches, group timeout {} s, Timer C {} s, single answer {}",
            match p.fork {
                ForkMode::Parallel => "parallel",
                ForkMode::QGroups => "q-group",
            },
            p.max_branches,
            p.group_timeout.as_secs(),
            p.timer_c.as_secs(),
            if p.single_answer { "on" } else { "off" }
        )?;
        let sec = &self.security;
        writeln!(
            f,
            "  security      block a source+user after {} failed digests in {} s (its address after {}), for {} s",
            sec.max_auth_failures,
            sec.auth_window.as_secs(),
            sec.max_auth_failures.saturating_mul(5),
            sec.block.as_secs()
        )?;
        for (name, channels) in self.tenancy.licensing() {
            match channels {
                Some(n) => writeln!(f, "  tenant        {name}: {n} public channels billed")?,
                None => writeln!(f, "  tenant        {name}: unlimited public channels")?,
            }
        }
        if let Some(n) = self.server.max_public_calls {
            writeln!(f, "  server        at most {n} public calls")?;
        }
        if !self.trunks.is_empty() {
            writeln!(f, "  trunks        {} trunk addresses", self.trunks.len())?;
        }
        if !self.dids.is_empty() {
            writeln!(f, "  dids          {} DID ranges", self.dids.len())?;
        }
        if !self.followme.is_empty() {
            writeln!(f, "  follow-me     {} extensions", self.followme.len())?;
        }
        const SHOWN: usize = 8;
        let ranges: Vec<String> = self
            .extension_ranges()
            .take(SHOWN)
            .map(|r| r.to_string())
            .collect();
        let more = self.extensions.range_count().saturating_sub(SHOWN);
        writeln!(
            f,
            "  extensions    {} numbers in {} ranges{}{}{}",
            self.extension_count(),
            self.extensions.range_count(),
            if ranges.is_empty() { "" } else { ": " },
            ranges.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )?;
        if self.trusted.is_empty() {
            writeln!(f, "  trusted       none")?;
        }
        for t in &self.trusted {
            writeln!(
                f,
                "  trusted       {} {}",
                t.cidr,
                t.name.as_deref().unwrap_or("")
            )?;
        }
        if self.routes.len() == 0 {
            writeln!(
                f,
                "  routes        none (numbers not provisioned here get 404)"
            )?;
        }
        for route in self.routes() {
            let prefix = if route.prefix.is_empty() {
                "(default)"
            } else {
                &route.prefix
            };
            writeln!(f, "  route         {prefix} -> {}", route.next_hop.uri)?;
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}
