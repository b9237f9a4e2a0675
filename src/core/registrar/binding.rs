//! One binding of an extension to a device (RFC 3261 §10.3, RFC 5626 §6), and its journal record.
//!
//! # Representation
//! A binding is one boxed byte block: fixed-width fields first, then the four strings it keeps
//! (Contact URI, Call-ID, `+sip.instance`, User-Agent) back to back with `u16` lengths. With
//! realistic contents (60-byte Contact, 40-byte Call-ID, a 47-byte instance URN, a 30-byte
//! User-Agent, IPv4 source) that is 215 bytes in one allocation (221 when calls go elsewhere
//! than the source), and the block lives behind a 16-byte pointer in its extension's list. A refresh whose strings keep their lengths (the usual
//! case: same phone, same Call-ID) rewrites the block in place and allocates nothing.
//!
//! The registration time is stored as wall-clock microseconds since the Unix epoch (DECISIONS.md:
//! monotonic epochs reset at restart) and the expiry as the granted lifetime in whole seconds
//! after it, so the block is also the journal value, after one version byte.
//!
//! # Layout (little-endian, version [`RECORD_VERSION`])
//! ```text
//! 0  flags u8         bit 0 instance, bit 1 (unused: reg-id, no longer kept), bit 2 q given,
//!                     bit 3 source is IPv6, bit 4 destination is IPv6, bit 5 destination is
//!                     the source (omitted), bit 6 class given
//! 1  transport u8     Via transport code ([`Transport`])
//! 2  id u16           binding id, unique within its extension (the journal key's suffix)
//! 4  q u16            thousandths (1000 when the Contact gave none)
//! 6  cseq u32         CSeq of the REGISTER that last wrote the binding
//! 10 class u32        device class id (`[[device_classes]]`; 0 = ip_phone when bit 6 is
//!                     clear: records written before classes existed)
//! 14 registered u64   wall µs of the last REGISTER that created or refreshed it
//! 22 lifetime u32     seconds granted: it expires at registered + lifetime
//! 26 contact_len u16, 28 call_id_len u16, 30 instance_len u16
//! 32 source           IPv4 (4) or IPv6 (16) address, then port u16
//!    destination      same shape, unless bit 5: where requests for the binding go (NAT rule
//!                     applied)
//!    contact ‖ call_id ‖ instance ‖ user_agent (the rest)
//! ```
//!
//! Invariant: every `Binding` holds a block whose lengths fit inside it ([`Binding::new`] writes
//! one, [`Binding::decode_value`] checks one), so the accessors never read out of bounds; they
//! still use checked reads, so a broken invariant yields empty fields, never a panic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version byte in front of every journal value.
pub const RECORD_VERSION: u8 = 1;
/// Longest User-Agent kept (longer ones are cut; the field is informational).
pub const MAX_USER_AGENT: usize = 128;

const F_INSTANCE: u8 = 1;
const F_REG_ID: u8 = 2;
const F_Q: u8 = 4;
const F_SOURCE_V6: u8 = 8;
const F_DEST_V6: u8 = 16;
const F_DEST_IS_SOURCE: u8 = 32;
const F_CLASS: u8 = 64;
const KNOWN_FLAGS: u8 =
    F_INSTANCE | F_REG_ID | F_Q | F_SOURCE_V6 | F_DEST_V6 | F_DEST_IS_SOURCE | F_CLASS;

const OFF_FLAGS: usize = 0;
const OFF_TRANSPORT: usize = 1;
const OFF_ID: usize = 2;
const OFF_Q: usize = 4;
const OFF_CSEQ: usize = 6;
const OFF_CLASS: usize = 10;
const OFF_REGISTERED: usize = 14;
const OFF_LIFETIME: usize = 22;
const OFF_CONTACT_LEN: usize = 26;
const OFF_CALL_ID_LEN: usize = 28;
const OFF_INSTANCE_LEN: usize = 30;
const FIXED: usize = 32;

/// The transport a binding was registered over: what the REGISTER came on (a TCP or TLS
/// binding is reached only over its flow, `core::transport::flows`), recorded with the Via's
/// token set (records written before the core knew transports hold the top Via's token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `UDP`.
    Udp,
    /// `TCP`.
    Tcp,
    /// `TLS`.
    Tls,
    /// `SCTP`.
    Sctp,
    /// `WS`.
    Ws,
    /// `WSS`.
    Wss,
    /// Any other token.
    Other,
}

impl Transport {
    const ALL: [Transport; 7] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Sctp,
        Transport::Ws,
        Transport::Wss,
        Transport::Other,
    ];

    /// Classifies a Via transport token (case-insensitive).
    pub fn from_token(token: &[u8]) -> Transport {
        Self::ALL
            .into_iter()
            .find(|t| *t != Transport::Other && t.name().as_bytes().eq_ignore_ascii_case(token))
            .unwrap_or(Transport::Other)
    }

    /// The token as written in a Via (`OTHER` for unknown ones).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other => "OTHER",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    /// A binding over a connection (reachable only over its flow while it is open).
    pub fn is_flow(self) -> bool {
        matches!(
            self,
            Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss
        )
    }

    fn from_code(code: u8) -> Option<Transport> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

impl From<crate::core::transport::Transport> for Transport {
    fn from(t: crate::core::transport::Transport) -> Transport {
        match t {
            crate::core::transport::Transport::Udp => Transport::Udp,
            crate::core::transport::Transport::Tcp => Transport::Tcp,
            crate::core::transport::Transport::Tls => Transport::Tls,
            crate::core::transport::Transport::Ws => Transport::Ws,
            crate::core::transport::Transport::Wss => Transport::Wss,
        }
    }
}

/// Everything a binding is written from (borrowed from the REGISTER, or from a decoded record).
#[derive(Clone, Copy, Debug)]
pub struct BindingSpec<'a> {
    /// Id within the extension.
    pub id: u16,
    /// Contact URI exactly as given (inside `<>` when bracketed).
    pub contact: &'a [u8],
    /// Call-ID of the REGISTER.
    pub call_id: &'a [u8],
    /// CSeq number of the REGISTER.
    pub cseq: u32,
    /// `+sip.instance` without its quotes.
    pub instance: Option<&'a [u8]>,
    /// Device class id (`[[device_classes]]`, 0 = ip_phone).
    pub class: u8,
    /// User-Agent (cut to [`MAX_USER_AGENT`]).
    pub user_agent: &'a [u8],
    /// q in thousandths, when the Contact gave one.
    pub q: Option<u16>,
    /// Source address of the REGISTER.
    pub source: SocketAddr,
    /// Where requests for this binding go.
    pub dest: SocketAddr,
    /// Top Via transport of the REGISTER.
    pub transport: Transport,
    /// Wall-clock µs of this registration.
    pub registered_us: u64,
    /// Seconds granted from `registered_us` (0 for a binding that is already gone).
    pub lifetime_secs: u32,
}

impl BindingSpec<'_> {
    fn user_agent_kept(&self) -> &[u8] {
        self.user_agent
            .get(..MAX_USER_AGENT)
            .unwrap_or(self.user_agent)
    }

    fn dest_stored(&self) -> bool {
        self.dest != self.source
    }

    fn encoded_len(&self) -> usize {
        FIXED
            + addr_len(self.source)
            + if self.dest_stored() {
                addr_len(self.dest)
            } else {
                0
            }
            + self.contact.len()
            + self.call_id.len()
            + self.instance.map_or(0, <[u8]>::len)
            + self.user_agent_kept().len()
    }

    /// Writes the block into `out`, which is exactly [`Self::encoded_len`] long.
    fn encode_into(&self, out: &mut [u8]) {
        let instance = self.instance.unwrap_or(&[]);
        let mut flags = 0;
        if self.instance.is_some() {
            flags |= F_INSTANCE;
        }
        if self.class != 0 {
            flags |= F_CLASS;
        }
        if self.q.is_some() {
            flags |= F_Q;
        }
        if self.source.is_ipv6() {
            flags |= F_SOURCE_V6;
        }
        if !self.dest_stored() {
            flags |= F_DEST_IS_SOURCE;
        } else if self.dest.is_ipv6() {
            flags |= F_DEST_V6;
        }
        let mut w = Writer { out, pos: 0 };
        w.put(&[flags, self.transport.code()]);
        w.put(&self.id.to_le_bytes());
        w.put(&self.q.unwrap_or(1000).to_le_bytes());
        w.put(&self.cseq.to_le_bytes());
        w.put(&u32::from(self.class).to_le_bytes());
        w.put(&self.registered_us.to_le_bytes());
        w.put(&self.lifetime_secs.to_le_bytes());
        w.put(&len16(self.contact).to_le_bytes());
        w.put(&len16(self.call_id).to_le_bytes());
        w.put(&len16(instance).to_le_bytes());
        w.put_addr(self.source);
        if self.dest_stored() {
            w.put_addr(self.dest);
        }
        w.put(self.contact);
        w.put(self.call_id);
        w.put(instance);
        w.put(self.user_agent_kept());
        debug_assert_eq!(
            w.pos,
            w.out.len(),
            "invariant: block length computed exactly"
        );
    }
}

/// Lengths are bounded by the 64 KiB datagram they came from.
fn len16(s: &[u8]) -> u16 {
    u16::try_from(s.len()).unwrap_or(u16::MAX)
}

fn addr_len(a: SocketAddr) -> usize {
    if a.is_ipv6() {
        18
    } else {
        6
    }
}

struct Writer<'o> {
    out: &'o mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.out.get_mut(self.pos..self.pos + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.pos += bytes.len();
    }

    fn put_addr(&mut self, a: SocketAddr) {
        match a.ip() {
            IpAddr::V4(v4) => self.put(&v4.octets()),
            IpAddr::V6(v6) => self.put(&v6.octets()),
        }
        self.put(&a.port().to_le_bytes());
    }
}

/// One binding: a single boxed byte block (see the module docs for its layout).
#[derive(Clone, PartialEq, Eq)]
pub struct Binding {
    block: Box<[u8]>,
}

impl Binding {
    /// Encodes `spec` into a fresh block.
    pub fn new(spec: &BindingSpec<'_>) -> Binding {
        let mut block = vec![0u8; spec.encoded_len()].into_boxed_slice();
        spec.encode_into(&mut block);
        Binding { block }
    }

    /// Rewrites the binding from `spec`, in place when the encoded length is unchanged.
    pub fn update(&mut self, spec: &BindingSpec<'_>) {
        if spec.encoded_len() == self.block.len() {
            spec.encode_into(&mut self.block);
        } else {
            *self = Binding::new(spec);
        }
    }

    /// The fields as a spec (to rewrite some of them).
    pub fn spec(&self) -> BindingSpec<'_> {
        BindingSpec {
            id: self.id(),
            contact: self.contact(),
            call_id: self.call_id(),
            cseq: self.cseq(),
            instance: self.instance(),
            class: self.class(),
            user_agent: self.user_agent(),
            q: (self.flags() & F_Q != 0).then_some(self.q()),
            source: self.source(),
            dest: self.dest(),
            transport: self.transport(),
            registered_us: self.registered_us(),
            lifetime_secs: self.u32_at(OFF_LIFETIME),
        }
    }

    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        self.block
            .get(at..at + N)
            .and_then(|s| s.try_into().ok())
            .unwrap_or([0; N])
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.bytes(at))
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes(at))
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes(at))
    }

    fn flags(&self) -> u8 {
        self.block.get(OFF_FLAGS).copied().unwrap_or(0)
    }

    fn source_len(&self) -> usize {
        if self.flags() & F_SOURCE_V6 != 0 {
            18
        } else {
            6
        }
    }

    fn dest_len(&self) -> usize {
        let flags = self.flags();
        if flags & F_DEST_IS_SOURCE != 0 {
            0
        } else if flags & F_DEST_V6 != 0 {
            18
        } else {
            6
        }
    }

    fn addr_at(&self, at: usize, v6: bool) -> SocketAddr {
        if v6 {
            let ip: [u8; 16] = self.bytes(at);
            SocketAddr::new(Ipv6Addr::from(ip).into(), self.u16_at(at + 16))
        } else {
            let ip: [u8; 4] = self.bytes(at);
            SocketAddr::new(Ipv4Addr::from(ip).into(), self.u16_at(at + 4))
        }
    }

    /// `(start, len)` of the four strings, in order.
    fn strings(&self) -> [(usize, usize); 4] {
        let contact = usize::from(self.u16_at(OFF_CONTACT_LEN));
        let call_id = usize::from(self.u16_at(OFF_CALL_ID_LEN));
        let instance = usize::from(self.u16_at(OFF_INSTANCE_LEN));
        let c0 = FIXED + self.source_len() + self.dest_len();
        let i0 = c0 + contact + call_id;
        let u0 = i0 + instance;
        [
            (c0, contact),
            (c0 + contact, call_id),
            (i0, instance),
            (u0, self.block.len().saturating_sub(u0)),
        ]
    }

    fn string(&self, which: usize) -> &[u8] {
        let (start, len) = self.strings().get(which).copied().unwrap_or((0, 0));
        self.block.get(start..start + len).unwrap_or(&[])
    }

    /// Id within the extension.
    pub fn id(&self) -> u16 {
        self.u16_at(OFF_ID)
    }

    /// The Contact URI as registered.
    pub fn contact(&self) -> &[u8] {
        self.string(0)
    }

    /// Call-ID of the REGISTER that last wrote the binding.
    pub fn call_id(&self) -> &[u8] {
        self.string(1)
    }

    /// CSeq number of that REGISTER.
    pub fn cseq(&self) -> u32 {
        self.u32_at(OFF_CSEQ)
    }

    /// `+sip.instance`, without quotes.
    pub fn instance(&self) -> Option<&[u8]> {
        (self.flags() & F_INSTANCE != 0).then(|| self.string(2))
    }

    /// Device class id (0 = ip_phone).
    pub fn class(&self) -> u8 {
        if self.flags() & F_CLASS != 0 {
            u8::try_from(self.u32_at(OFF_CLASS)).unwrap_or(0)
        } else {
            0
        }
    }

    /// User-Agent (possibly empty).
    pub fn user_agent(&self) -> &[u8] {
        self.string(3)
    }

    /// q in thousandths (1000 when the device gave none).
    pub fn q(&self) -> u16 {
        self.u16_at(OFF_Q)
    }

    /// Whether the device gave a q.
    pub fn q_given(&self) -> bool {
        self.flags() & F_Q != 0
    }

    /// Source address of the REGISTER.
    pub fn source(&self) -> SocketAddr {
        self.addr_at(FIXED, self.flags() & F_SOURCE_V6 != 0)
    }

    /// Where requests for the binding go.
    pub fn dest(&self) -> SocketAddr {
        if self.flags() & F_DEST_IS_SOURCE != 0 {
            return self.source();
        }
        self.addr_at(FIXED + self.source_len(), self.flags() & F_DEST_V6 != 0)
    }

    /// Transport named in the REGISTER's top Via.
    pub fn transport(&self) -> Transport {
        self.block
            .get(OFF_TRANSPORT)
            .and_then(|&c| Transport::from_code(c))
            .unwrap_or(Transport::Other)
    }

    /// Wall-clock µs of the last REGISTER that created or refreshed the binding.
    pub fn registered_us(&self) -> u64 {
        self.u64_at(OFF_REGISTERED)
    }

    /// Wall-clock µs of expiry.
    pub fn expires_us(&self) -> u64 {
        self.registered_us()
            .saturating_add(u64::from(self.u32_at(OFF_LIFETIME)) * 1_000_000)
    }

    /// Bytes of the block (the binding's own heap storage).
    pub fn block_len(&self) -> usize {
        self.block.len()
    }

    /// Appends the journal value: [`RECORD_VERSION`] then the block.
    pub fn encode_value(&self, out: &mut Vec<u8>) {
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.block);
    }

    /// Decodes a journal value; `None` for another version or an inconsistent block.
    pub fn decode_value(value: &[u8]) -> Option<Binding> {
        let (&version, block) = value.split_first()?;
        if version != RECORD_VERSION || block.len() < FIXED {
            return None;
        }
        let binding = Binding {
            block: block.into(),
        };
        let flags = binding.flags();
        let [_, _, (i0, ilen), (u0, _)] = binding.strings();
        let consistent = flags & !KNOWN_FLAGS == 0
            && flags & (F_DEST_IS_SOURCE | F_DEST_V6) != (F_DEST_IS_SOURCE | F_DEST_V6)
            && block
                .get(OFF_TRANSPORT)
                .is_some_and(|&c| Transport::from_code(c).is_some())
            && i0 + ilen <= block.len()
            && u0 <= block.len()
            && (flags & F_INSTANCE != 0 || ilen == 0)
            && (flags & (F_REG_ID | F_CLASS) != 0 || binding.u32_at(OFF_CLASS) == 0);
        consistent.then_some(binding)
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("id", &self.id())
            .field("contact", &String::from_utf8_lossy(self.contact()))
            .field("q", &self.q())
            .field("dest", &self.dest())
            .field("expires_us", &self.expires_us())
            .finish_non_exhaustive()
    }
}

/// Longest journal key: 19 digits, `:`, 5 digits.
pub const MAX_KEY_LEN: usize = 25;

/// A journal key, on the stack: `NUMBER:ID` (`1001:3`), readable in a journal dump.
#[derive(Clone, Copy)]
pub struct RecordKey {
    buf: [u8; MAX_KEY_LEN],
    len: u8,
}

impl RecordKey {
    /// The key of binding `id` of extension `number` (1 to 19 digits).
    pub fn new(number: &[u8], id: u16) -> RecordKey {
        let mut key = RecordKey {
            buf: [0; MAX_KEY_LEN],
            len: 0,
        };
        let mut digits = [0u8; 5];
        let mut n = id;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &b in number
            .iter()
            .chain(b":")
            .chain(digits.get(i..).unwrap_or(&[]))
        {
            if let Some(slot) = key.buf.get_mut(usize::from(key.len)) {
                *slot = b;
                key.len += 1;
            }
        }
        key
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// Splits a journal key into extension number and binding id; `None` when it is not one of ours.
pub fn parse_key(key: &[u8]) -> Option<(&[u8], u16)> {
    let colon = key.iter().position(|&b| b == b':')?;
    let (number, id) = (key.get(..colon)?, key.get(colon + 1..)?);
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(number) || !digits(id) || id.len() > 5 {
        return None;
    }
    let id = id
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    Some((number, u16::try_from(id).ok()?))
}

/// The extension a journal key belongs to: the engine re-partitions journals with
/// `owner_of(key_extension(key), shards)` when the shard count changes.
pub fn key_extension(key: &[u8]) -> Option<&[u8]> {
    parse_key(key).map(|(number, _)| number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(contact: &'a [u8], ua: &'a [u8]) -> BindingSpec<'a> {
        BindingSpec {
            id: 7,
            contact,
            call_id: b"a84b4c76e66710@pc33.atlanta.example.com-xyz0123456",
            cseq: 42,
            instance: Some(b"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"),
            class: 3,
            user_agent: ua,
            q: Some(500),
            source: "192.0.2.10:40000".parse().unwrap(),
            dest: "[2001:db8::1]:5062".parse().unwrap(),
            transport: Transport::Udp,
            registered_us: 1_700_000_000_000_001,
            lifetime_secs: 3600,
        }
    }

    #[test]
    fn fields_read_back_and_survive_the_journal() {
        let s = spec(b"sip:1001@192.0.2.10:40000;transport=udp", b"Phone/1.0");
        let b = Binding::new(&s);
        assert_eq!(b.id(), 7);
        assert_eq!(b.contact(), s.contact);
        assert_eq!(b.call_id(), s.call_id);
        assert_eq!(b.cseq(), 42);
        assert_eq!(b.instance(), s.instance);
        assert_eq!(b.class(), 3);
        assert_eq!(b.user_agent(), b"Phone/1.0");
        assert_eq!((b.q(), b.q_given()), (500, true));
        assert_eq!(b.source(), s.source);
        assert_eq!(b.dest(), s.dest);
        assert_eq!(b.transport(), Transport::Udp);
        assert_eq!(b.registered_us(), s.registered_us);
        assert_eq!(b.expires_us(), 1_700_003_600_000_001);
        let mut value = Vec::new();
        b.encode_value(&mut value);
        assert_eq!(value[0], RECORD_VERSION);
        assert_eq!(Binding::decode_value(&value), Some(b.clone()));
        assert_eq!(Binding::new(&b.spec()), b);
    }

    #[test]
    fn destination_equal_to_the_source_is_not_stored() {
        let mut s = spec(b"sip:1001@192.0.2.10:40000", b"ua");
        let apart = Binding::new(&s);
        s.dest = s.source;
        let same = Binding::new(&s);
        assert_eq!(apart.block_len(), same.block_len() + 18);
        assert_eq!(same.dest(), s.source);
        assert_eq!(same.contact(), s.contact);
        let mut value = Vec::new();
        same.encode_value(&mut value);
        assert_eq!(Binding::decode_value(&value), Some(same));
    }

    #[test]
    fn records_with_a_reg_id_from_before_classes_read_as_ip_phones() {
        let mut s = spec(b"sip:a@b", b"");
        s.class = 0;
        let mut value = Vec::new();
        Binding::new(&s).encode_value(&mut value);
        // What an older build wrote for reg-id=1: bit 1 and the value in the slot.
        value[1 + OFF_FLAGS] |= F_REG_ID;
        value[1 + OFF_CLASS] = 1;
        let b = Binding::decode_value(&value).expect("still a valid record");
        assert_eq!(b.class(), 0);
    }

    #[test]
    fn absent_fields_stay_absent() {
        let mut s = spec(b"sip:a@b", b"");
        s.instance = None;
        s.class = 0;
        s.q = None;
        let b = Binding::new(&s);
        assert_eq!(b.instance(), None);
        assert_eq!(b.class(), 0);
        assert_eq!((b.q(), b.q_given()), (1000, false));
        assert_eq!(b.user_agent(), b"");
    }

    #[test]
    fn same_length_refresh_rewrites_in_place() {
        let mut b = Binding::new(&spec(b"sip:1001@192.0.2.10", b"A"));
        let before = b.block.as_ptr();
        let mut s = spec(b"sip:1001@192.0.2.11", b"B");
        s.cseq = 43;
        b.update(&s);
        assert_eq!(b.block.as_ptr(), before);
        assert_eq!((b.cseq(), b.contact()), (43, &b"sip:1001@192.0.2.11"[..]));
        b.update(&spec(b"sip:1001@192.0.2.100", b"B"));
        assert_eq!(b.contact(), b"sip:1001@192.0.2.100");
    }

    #[test]
    fn long_user_agents_are_cut() {
        let ua = vec![b'x'; 300];
        let b = Binding::new(&spec(b"sip:a@b", &ua));
        assert_eq!(b.user_agent().len(), MAX_USER_AGENT);
    }

    #[test]
    fn broken_values_are_refused_not_panicked_on() {
        let b = Binding::new(&spec(b"sip:a@b", b"ua"));
        let mut value = Vec::new();
        b.encode_value(&mut value);
        for cut in 0..value.len() - 3 {
            // Cutting into the strings leaves a block whose lengths do not fit.
            let decoded = Binding::decode_value(&value[..cut]);
            if let Some(d) = decoded {
                let _ = (d.contact(), d.call_id(), d.instance(), d.user_agent());
            }
        }
        let mut other_version = value.clone();
        other_version[0] = 2;
        assert_eq!(Binding::decode_value(&other_version), None);
        let mut bad_flags = value.clone();
        bad_flags[1] |= 0x80;
        assert_eq!(Binding::decode_value(&bad_flags), None);
        assert_eq!(Binding::decode_value(&[]), None);
    }

    #[test]
    fn keys() {
        let k = RecordKey::new(b"1001", 3);
        assert_eq!(k.as_bytes(), b"1001:3");
        assert_eq!(parse_key(k.as_bytes()), Some((&b"1001"[..], 3)));
        let k = RecordKey::new(b"1234567890123456789", u16::MAX);
        assert_eq!(k.as_bytes(), b"1234567890123456789:65535");
        assert_eq!(
            key_extension(k.as_bytes()),
            Some(&b"1234567890123456789"[..])
        );
        for bad in [
            &b""[..],
            b"1001",
            b":3",
            b"1001:",
            b"10a1:3",
            b"1001:65536",
            b"1:123456",
        ] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
    }
}
