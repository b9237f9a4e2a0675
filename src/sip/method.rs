//! Request methods (RFC 3261 §7.1, §27.4 and the extension RFCs that registered them).
//!
//! Methods are case-sensitive: `invite` is an unknown method, not INVITE.

/// A request method; unknown methods keep their bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method<'b> {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// REGISTER (RFC 3261).
    Register,
    /// OPTIONS (RFC 3261).
    Options,
    /// MESSAGE (RFC 3428).
    Message,
    /// NOTIFY (RFC 6665).
    Notify,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// REFER (RFC 3515).
    Refer,
    /// INFO (RFC 6086).
    Info,
    /// UPDATE (RFC 3311).
    Update,
    /// PRACK (RFC 3262).
    Prack,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other token.
    Other(&'b [u8]),
}

impl<'b> Method<'b> {
    /// Classifies a method token (case-sensitive).
    #[inline]
    pub fn from_bytes(token: &'b [u8]) -> Method<'b> {
        match token {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"MESSAGE" => Method::Message,
            b"NOTIFY" => Method::Notify,
            b"SUBSCRIBE" => Method::Subscribe,
            b"REFER" => Method::Refer,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"PUBLISH" => Method::Publish,
            other => Method::Other(other),
        }
    }

    /// The method as it goes on the wire.
    pub fn as_bytes(&self) -> &'b [u8] {
        match self {
            Method::Invite => b"INVITE",
            Method::Ack => b"ACK",
            Method::Bye => b"BYE",
            Method::Cancel => b"CANCEL",
            Method::Register => b"REGISTER",
            Method::Options => b"OPTIONS",
            Method::Message => b"MESSAGE",
            Method::Notify => b"NOTIFY",
            Method::Subscribe => b"SUBSCRIBE",
            Method::Refer => b"REFER",
            Method::Info => b"INFO",
            Method::Update => b"UPDATE",
            Method::Prack => b"PRACK",
            Method::Publish => b"PUBLISH",
            Method::Other(token) => token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::from_bytes(b"INVITE"), Method::Invite);
        assert_eq!(Method::from_bytes(b"invite"), Method::Other(b"invite"));
        assert_eq!(
            Method::from_bytes(b"RE%47IST%45R"),
            Method::Other(b"RE%47IST%45R")
        );
        for m in [
            Method::Ack,
            Method::Prack,
            Method::Publish,
            Method::Other(b"NEWMETHOD"),
        ] {
            assert_eq!(Method::from_bytes(m.as_bytes()), m);
        }
    }
}
