//! `[[device_classes]]`: what kind of device a REGISTER comes from, for per-class limits
//! (`classes = { mobile = 2 }` on `[[extensions]]`, besides `max_contacts`).
//!
//! Classes are matched in file order on the REGISTER's User-Agent (a regular expression), on
//! the presence of a Contact header parameter, or on the transport the REGISTER came over
//! (`transport = ["ws", "wss"]`: whatever registers over a WebSocket); a class matches when any
//! of its matchers does. A REGISTER no class matches is an `ip_phone` (class 0, always there; a
//! `[[device_classes]]` entry named `ip_phone` gives it matchers).

use regex::bytes::Regex;

use crate::core::transport::Transport;

/// The class every unmatched REGISTER falls into.
pub const DEFAULT_CLASS: &str = "ip_phone";

/// Most classes (class ids are stored in a binding's record as one byte).
pub const MAX_CLASSES: usize = 32;

/// One class.
#[derive(Clone, Debug)]
pub struct DeviceClass {
    /// Its name (unique).
    pub name: String,
    /// Matches the User-Agent.
    pub user_agent: Option<Regex>,
    /// A Contact header parameter whose presence selects the class (`+sip.instance`).
    pub contact_param: Option<String>,
    /// Transports whose REGISTERs fall into the class (empty: not matched on).
    pub transport: Vec<Transport>,
}

/// Every class, `ip_phone` first.
#[derive(Clone, Debug)]
pub struct DeviceClasses {
    classes: Vec<DeviceClass>,
}

impl Default for DeviceClasses {
    fn default() -> Self {
        DeviceClasses {
            classes: vec![DeviceClass {
                name: DEFAULT_CLASS.into(),
                user_agent: None,
                contact_param: None,
                transport: Vec::new(),
            }],
        }
    }
}

impl DeviceClasses {
    /// Adds a class (or gives `ip_phone` its matchers); `Err` says why it cannot be.
    pub(super) fn add(&mut self, class: DeviceClass) -> Result<(), String> {
        if class.user_agent.is_none() && class.contact_param.is_none() && class.transport.is_empty()
        {
            return Err("a class needs user_agent, contact_param or transport to match on".into());
        }
        if class.name == DEFAULT_CLASS
            && self.classes[0].user_agent.is_none()
            && self.classes[0].contact_param.is_none()
            && self.classes[0].transport.is_empty()
        {
            self.classes[0] = class;
            return Ok(());
        }
        if self.classes.iter().any(|c| c.name == class.name) {
            return Err(format!("{:?} is already a class", class.name));
        }
        if self.classes.len() >= MAX_CLASSES {
            return Err(format!("at most {MAX_CLASSES} classes"));
        }
        self.classes.push(class);
        Ok(())
    }

    /// The class id of a REGISTER with this User-Agent whose Contact carries the parameters
    /// `has_param` says it has: the first class that matches, else 0 (`ip_phone`).
    pub fn classify(&self, user_agent: &[u8], has_param: impl Fn(&str) -> bool) -> u8 {
        self.classify_over(Transport::Udp, user_agent, has_param)
    }

    /// [`DeviceClasses::classify`] for a REGISTER that came over `transport` (a class with
    /// `transport` matchers matches it when one of them is `transport`).
    pub fn classify_over(
        &self,
        transport: Transport,
        user_agent: &[u8],
        has_param: impl Fn(&str) -> bool,
    ) -> u8 {
        let matches = |c: &DeviceClass| {
            c.user_agent
                .as_ref()
                .is_some_and(|r| r.is_match(user_agent))
                || c.contact_param.as_deref().is_some_and(&has_param)
                || c.transport.contains(&transport)
        };
        // Named classes first, in file order; ip_phone's own matchers last (it is the default).
        (1..self.classes.len())
            .find(|&i| matches(&self.classes[i]))
            .map_or(0, |i| i as u8)
    }

    /// The id of class `name`.
    pub fn find(&self, name: &str) -> Option<u8> {
        self.classes
            .iter()
            .position(|c| c.name == name)
            .map(|i| i as u8)
    }

    /// The name of class `id` (`ip_phone` for an id no longer configured).
    pub fn name(&self, id: u8) -> &str {
        self.classes
            .get(usize::from(id))
            .map_or(DEFAULT_CLASS, |c| c.name.as_str())
    }

    /// Classes configured, `ip_phone` included.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Never true (`ip_phone` is always there).
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_in_order_else_ip_phone() {
        let mut c = DeviceClasses::default();
        c.add(DeviceClass {
            name: "mobile".into(),
            user_agent: Some(Regex::new("(?i)linkus.*(android|ios)|zoiper").unwrap()),
            contact_param: None,
            transport: Vec::new(),
        })
        .unwrap();
        c.add(DeviceClass {
            name: "web".into(),
            user_agent: None,
            contact_param: Some("+sip.ice".into()),
            transport: Vec::new(),
        })
        .unwrap();
        assert_eq!(c.classify(b"Linkus Android 1.2", |_| false), 1);
        assert_eq!(
            c.classify(b"Zoiper rv2.10", |p| p == "+sip.ice"),
            1,
            "first wins"
        );
        assert_eq!(c.classify(b"JsSIP 3.10", |p| p == "+sip.ice"), 2);
        assert_eq!(c.classify(b"Yealink SIP-T46S", |_| false), 0);
        assert_eq!(c.name(0), "ip_phone");
        assert_eq!(c.find("web"), Some(2));
        assert!(c
            .add(DeviceClass {
                name: "web".into(),
                user_agent: None,
                contact_param: Some("x".into()),
                transport: Vec::new(),
            })
            .is_err());
    }

    #[test]
    fn a_transport_matcher_takes_whatever_registers_over_it() {
        let mut c = DeviceClasses::default();
        c.add(DeviceClass {
            name: "mobile".into(),
            user_agent: Some(Regex::new("(?i)zoiper").unwrap()),
            contact_param: None,
            transport: Vec::new(),
        })
        .unwrap();
        c.add(DeviceClass {
            name: "web".into(),
            user_agent: None,
            contact_param: None,
            transport: vec![Transport::Ws, Transport::Wss],
        })
        .unwrap();
        assert_eq!(c.classify_over(Transport::Ws, b"JsSIP 3.10", |_| false), 2);
        assert_eq!(
            c.classify_over(Transport::Wss, b"SIP.js/0.21", |_| false),
            2
        );
        assert_eq!(c.classify_over(Transport::Udp, b"JsSIP 3.10", |_| false), 0);
        assert_eq!(c.classify_over(Transport::Tls, b"JsSIP 3.10", |_| false), 0);
        assert_eq!(c.classify(b"JsSIP 3.10", |_| false), 0);
        // File order still decides: a Zoiper over WSS is `mobile`.
        assert_eq!(c.classify_over(Transport::Wss, b"Zoiper 5", |_| false), 1);
        let none = DeviceClass {
            name: "empty".into(),
            user_agent: None,
            contact_param: None,
            transport: Vec::new(),
        };
        assert!(c.add(none).unwrap_err().contains("transport"));
    }
}
