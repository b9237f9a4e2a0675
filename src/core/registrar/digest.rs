//! HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 8760, RFC 7616), sans-IO.
//!
//! # Nonces are stateless
//! A nonce is `base64url(issued ‖ serial ‖ tag)`: the issue time in seconds, a per-authority serial
//! (the issuer id in its top 16 bits, so two shards never mint the same nonce), and the first
//! 16 bytes of HMAC-SHA-256 over realm, issue time and serial under a per-boot key the engine
//! draws from the OS. Any shard holding the key verifies any shard's nonce; nothing is stored
//! when a challenge is sent. Nonces from before a restart (old key) fail the tag check.
//!
//! # Replay protection
//! Each authority keeps a bounded map `(issued, serial) → highest nonce-count accepted` for
//! nonces that have not yet expired. A nonce-count that does not increase is a replay.
//! Entries leave the map when their nonce expires (a use after that is [`AuthFailure::Stale`]
//! anyway); when the map is full the oldest nonce is evicted and every nonce issued at or before
//! it is answered as stale from then on, so an eviction never reopens a replay window.
//!
//! # Decisions (the invariant a reader must not break: a request is accepted only when its
//! response matches, its nonce is ours and fresh, and its nonce-count is new)
//! - Only `qop=auth` is accepted. Credentials without `qop` (RFC 2069 style) carry no
//!   nonce-count, so they could be replayed for the nonce's lifetime: they are refused like
//!   `auth-int` ([`AuthFailure::UnsupportedQop`]).
//! - Only the algorithms this authority offers are accepted (no downgrade to MD5 when only
//!   SHA-256 is offered). The `-sess` variants are accepted when offered; the HA1 for them is the
//!   base algorithm's, hashed again with nonce and cnonce (RFC 7616 §3.4.2).
//! - The response is checked before the nonce, so a well-formed request whose nonce is bad or
//!   expired is known to come from someone with the password: it gets `stale=true` (RFC 7616
//!   §3.3 SHOULD), and phones re-authenticate without prompting after a restart.
//! - A replayed nonce-count is answered with a fresh `stale=true` challenge, not 403: an honest
//!   phone that reordered or re-sent a request recovers at once, and the replayed message gets
//!   nothing it did not already have.
//! - Unknown user and wrong password both map to 403 (DECISIONS.md), so answers do not reveal
//!   which extensions exist.
//! - Comparing the digest-uri with the Request-URI (RFC 7616 §3.4.6) is the caller's job; this
//!   module hashes the uri the credentials carry.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::Sha256;

/// Bytes of the nonce's MAC (first half of HMAC-SHA-256).
const TAG_LEN: usize = 16;
/// Raw nonce: issued (8) ‖ serial (8) ‖ tag (16).
const NONCE_RAW_LEN: usize = 16 + TAG_LEN;
/// base64url without padding of [`NONCE_RAW_LEN`] bytes.
const NONCE_TEXT_LEN: usize = (NONCE_RAW_LEN * 4).div_ceil(3);
/// Domain separation for the nonce MAC.
const NONCE_CONTEXT: &[u8] = b"sipfork digest nonce v1\0";
/// Default bound of the replay map per authority (about 64 bytes per entry).
pub const DEFAULT_REPLAY_CAPACITY: usize = 65_536;

/// The authorization parameters of one `Authorization` or `Proxy-Authorization` header, as
/// views into the message (the SIP parser's type: one definition for parser and verifier).
pub use crate::sip::DigestCredentials as Credentials;

/// A digest algorithm (RFC 7616 §3.2; RFC 8760 for SIP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `MD5` (the default when a request names none).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    /// Every algorithm, in the order a challenge would best offer them.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
        Algorithm::Md5,
        Algorithm::Md5Sess,
    ];

    /// Parses a token such as `SHA-256` (case-insensitive, as RFC 7616 tokens are).
    pub fn from_name(name: &[u8]) -> Option<Algorithm> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// The token as written in challenges.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// The algorithm whose `H(username:realm:password)` this one starts from.
    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
        }
    }

    /// True for the `-sess` variants.
    pub fn is_session(self) -> bool {
        self != self.base()
    }

    /// Bytes of one hash output.
    pub fn hash_len(self) -> usize {
        match self.base() {
            Algorithm::Sha256 => 32,
            _ => 16,
        }
    }
}

/// One hash output (16 bytes for MD5, 32 for SHA-256), kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashOut {
    bytes: [u8; 32],
    len: u8,
}

impl HashOut {
    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Lower-case hex, as digest puts hashes on the wire and into the next hash.
    pub fn to_hex(&self) -> HexOut {
        let mut out = HexOut {
            bytes: [0; 64],
            len: self.len * 2,
        };
        for (i, b) in self.as_bytes().iter().enumerate() {
            out.bytes[2 * i] = HEX_DIGITS[usize::from(b >> 4)];
            out.bytes[2 * i + 1] = HEX_DIGITS[usize::from(b & 0xf)];
        }
        out
    }
}

impl std::fmt::Debug for HashOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.to_hex().as_str())
    }
}

/// A hash in lower-case hex, on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexOut {
    bytes: [u8; 64],
    len: u8,
}

impl HexOut {
    /// The hex digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The hex digits as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("invariant: hex digits are ASCII")
    }
}

impl std::fmt::Debug for HexOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `H(username:realm:password)` for one base algorithm: what a registrar stores instead of
/// the password (config `ha1_md5` / `ha1_sha256`) or derives from it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ha1 {
    algorithm: Algorithm,
    hash: HashOut,
}

impl Ha1 {
    /// Derives HA1 from a plain password.
    pub fn from_password(
        algorithm: Algorithm,
        username: &[u8],
        realm: &[u8],
        password: &[u8],
    ) -> Ha1 {
        let algorithm = algorithm.base();
        Ha1 {
            algorithm,
            hash: hash(algorithm, &[username, realm, password]),
        }
    }

    /// Takes a precomputed HA1 (raw bytes); `None` when the length does not fit the algorithm.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Option<Ha1> {
        let algorithm = algorithm.base();
        if bytes.len() != algorithm.hash_len() {
            return None;
        }
        let mut hash = HashOut {
            bytes: [0; 32],
            len: bytes.len() as u8,
        };
        hash.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(Ha1 { algorithm, hash })
    }

    /// Takes a precomputed HA1 in hex (either case); `None` when it is not hex of the right length.
    pub fn from_hex(algorithm: Algorithm, hex: &[u8]) -> Option<Ha1> {
        let mut raw = [0u8; 32];
        let len = decode_hex(hex, &mut raw)?;
        Self::from_bytes(algorithm, &raw[..len])
    }

    /// The base algorithm this HA1 belongs to.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw hash.
    pub fn as_bytes(&self) -> &[u8] {
        self.hash.as_bytes()
    }
}

impl std::fmt::Debug for Ha1 {
    // Never print the secret itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ha1({}, …)", self.algorithm.name())
    }
}

/// The request fields a digest response covers (RFC 7616 §3.4.1, `qop=auth`).
#[derive(Clone, Copy, Debug)]
pub struct ResponseInput<'a> {
    /// Request method (`REGISTER`, `INVITE`, …).
    pub method: &'a [u8],
    /// digest-uri as sent in the credentials.
    pub uri: &'a [u8],
    /// Server nonce.
    pub nonce: &'a [u8],
    /// Nonce-count, 8 hex digits as sent.
    pub nc: &'a [u8],
    /// Client nonce.
    pub cnonce: &'a [u8],
    /// Quality of protection as sent (`auth`).
    pub qop: &'a [u8],
}

/// The `response` value a client sends, for `qop=auth`: also used by the load harness and tests.
pub fn compute_response(algorithm: Algorithm, ha1: &Ha1, input: &ResponseInput<'_>) -> HexOut {
    let session_ha1;
    let ha1_hex = if algorithm.is_session() {
        // RFC 7616 §3.4.2: HA1 = H(H(user:realm:password):nonce:cnonce) for the -sess variants.
        session_ha1 = hash(
            algorithm,
            &[ha1.hash.to_hex().as_bytes(), input.nonce, input.cnonce],
        );
        session_ha1.to_hex()
    } else {
        ha1.hash.to_hex()
    };
    let ha2 = hash(algorithm, &[input.method, input.uri]).to_hex();
    hash(
        algorithm,
        &[
            ha1_hex.as_bytes(),
            input.nonce,
            input.nc,
            input.cnonce,
            input.qop,
            ha2.as_bytes(),
        ],
    )
    .to_hex()
}

/// `H(p1:p2:…)` with the algorithm's hash function.
fn hash(algorithm: Algorithm, parts: &[&[u8]]) -> HashOut {
    fn run<D: sha2::Digest>(parts: &[&[u8]], out: &mut HashOut) {
        let mut h = D::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                h.update(b":");
            }
            h.update(part);
        }
        let digest = h.finalize();
        out.bytes[..digest.len()].copy_from_slice(&digest);
        out.len = digest.len() as u8;
    }
    let mut out = HashOut {
        bytes: [0; 32],
        len: 0,
    };
    match algorithm.base() {
        Algorithm::Sha256 => run::<Sha256>(parts, &mut out),
        _ => run::<Md5>(parts, &mut out),
    }
    out
}

/// Which header a challenge goes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeHeader {
    /// `WWW-Authenticate` (401, registrar).
    WwwAuthenticate,
    /// `Proxy-Authenticate` (407, proxy).
    ProxyAuthenticate,
}

impl ChallengeHeader {
    /// The header name as written.
    pub fn name(self) -> &'static str {
        match self {
            ChallengeHeader::WwwAuthenticate => "WWW-Authenticate",
            ChallengeHeader::ProxyAuthenticate => "Proxy-Authenticate",
        }
    }
}

/// A successful verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The algorithm the client used.
    pub algorithm: Algorithm,
    /// The nonce-count accepted.
    pub nc: u32,
    /// When the nonce was issued (seconds, the authority's clock).
    pub issued: u64,
}

/// Why credentials were not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials for us (no `Authorization` header, or none for our realm).
    Missing,
    /// Not the `Digest` scheme.
    UnsupportedScheme,
    /// Credentials for another realm.
    WrongRealm,
    /// A syntax problem in a parameter; the `&str` says which.
    Malformed(&'static str),
    /// An algorithm this authority does not offer.
    UnsupportedAlgorithm,
    /// `qop` absent or not `auth`.
    UnsupportedQop,
    /// No credential known for the username.
    UnknownUser,
    /// The response does not match: wrong password (or tampered fields).
    BadResponse,
    /// One of our nonces, expired (the response is not looked at).
    Stale,
    /// A nonce that is not ours: made up, or from a previous boot (the response is not looked
    /// at).
    ForgedNonce,
    /// The nonce-count did not increase: a replayed or reordered request.
    Replay,
}

/// What goes on the wire for an [`AuthFailure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthAnswer {
    /// 401 / 407 with a fresh challenge; `stale=true` tells the client its password was right.
    Challenge {
        /// Whether to set `stale=true`.
        stale: bool,
    },
    /// 403: wrong credentials (DECISIONS.md).
    Forbidden,
    /// 400: the header cannot be understood.
    BadRequest,
}

impl AuthFailure {
    /// The answer this failure gets.
    pub fn answer(self) -> AuthAnswer {
        match self {
            AuthFailure::Missing
            | AuthFailure::UnsupportedScheme
            | AuthFailure::WrongRealm
            | AuthFailure::UnsupportedAlgorithm
            | AuthFailure::UnsupportedQop
            | AuthFailure::ForgedNonce => AuthAnswer::Challenge { stale: false },
            AuthFailure::Stale | AuthFailure::Replay => AuthAnswer::Challenge { stale: true },
            AuthFailure::UnknownUser | AuthFailure::BadResponse => AuthAnswer::Forbidden,
            AuthFailure::Malformed(_) => AuthAnswer::BadRequest,
        }
    }

    /// A short reason, fit for a log line or a reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "credentials required",
            AuthFailure::UnsupportedScheme => "only Digest authentication is supported",
            AuthFailure::WrongRealm => "credentials for another realm",
            AuthFailure::Malformed(why) => why,
            AuthFailure::UnsupportedAlgorithm => "digest algorithm not offered",
            AuthFailure::UnsupportedQop => "qop=auth required",
            AuthFailure::UnknownUser | AuthFailure::BadResponse => "wrong credentials",
            AuthFailure::Stale => "stale nonce",
            AuthFailure::ForgedNonce => "nonce not issued here",
            AuthFailure::Replay => "nonce-count replayed",
        }
    }
}

/// Issues challenges and verifies credentials for one realm; one per shard.
pub struct DigestAuthority {
    /// HMAC state keyed once; cloned per nonce (cheaper than re-keying).
    mac: Hmac<Sha256>,
    realm: String,
    ttl_secs: u64,
    algorithms: Vec<Algorithm>,
    /// Next nonce serial; the issuer id sits in the top 16 bits.
    serial: u64,
    counts: NonceCounts,
}

impl DigestAuthority {
    /// An authority for `realm`, with nonces valid for `ttl`, offering `algorithms` in this
    /// order (first preferred; repeats dropped; SHA-256 alone when empty). `key` is per boot
    /// and shared by every shard.
    pub fn new(key: [u8; 32], realm: &str, ttl: Duration, algorithms: &[Algorithm]) -> Self {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .expect("invariant: HMAC takes any key length");
        let mut offered: Vec<Algorithm> = Vec::with_capacity(algorithms.len());
        for &a in algorithms {
            if !offered.contains(&a) {
                offered.push(a);
            }
        }
        if offered.is_empty() {
            offered.push(Algorithm::Sha256);
        }
        DigestAuthority {
            mac,
            realm: realm.to_owned(),
            ttl_secs: ttl.as_secs().max(1),
            algorithms: offered,
            serial: 0,
            counts: NonceCounts::new(DEFAULT_REPLAY_CAPACITY),
        }
    }

    /// Sets the issuer id (the shard index), so nonces minted by different shards in the same
    /// second differ.
    pub fn with_issuer(mut self, issuer: u16) -> Self {
        self.serial = u64::from(issuer) << 48;
        self
    }

    /// Bounds the replay map to `capacity` nonces (at least 1).
    pub fn with_replay_capacity(mut self, capacity: usize) -> Self {
        self.counts = NonceCounts::new(capacity.max(1));
        self
    }

    /// The realm challenged for.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The algorithms offered, in challenge order.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Nonces currently tracked for replay protection.
    pub fn tracked_nonces(&self) -> usize {
        self.counts.map.len()
    }

    /// Appends one `header` line per offered algorithm, all with one fresh nonce:
    /// `WWW-Authenticate: Digest realm="…", nonce="…", algorithm=SHA-256, qop="auth"\r\n`.
    /// `now` is in seconds on a clock every shard shares (the engine passes UNIX time).
    pub fn challenge(&mut self, now: u64, stale: bool, header: ChallengeHeader, out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_TEXT_LEN];
        self.mint_nonce(now, &mut nonce);
        for &algorithm in &self.algorithms {
            out.extend_from_slice(header.name().as_bytes());
            out.extend_from_slice(b": Digest realm=\"");
            push_quoted(out, self.realm.as_bytes());
            out.extend_from_slice(b"\", nonce=\"");
            out.extend_from_slice(&nonce);
            out.extend_from_slice(b"\", algorithm=");
            out.extend_from_slice(algorithm.name().as_bytes());
            out.extend_from_slice(b", qop=\"auth\"");
            if stale {
                out.extend_from_slice(b", stale=true");
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Checks `creds` for a request with `method` at `now` (seconds, as for [`Self::challenge`]).
    /// `ha1` is asked for the username's HA1 under the base algorithm (MD5 for `MD5-sess`);
    /// it returns `None` for an unknown user.
    pub fn verify(
        &mut self,
        now: u64,
        method: &[u8],
        creds: &Credentials<'_>,
        ha1: impl FnOnce(Algorithm) -> Option<Ha1>,
    ) -> Result<Verified, AuthFailure> {
        if !creds.scheme.eq_ignore_ascii_case(b"Digest") {
            return Err(AuthFailure::UnsupportedScheme);
        }
        if creds.escaped {
            // Quoted-pair escapes would have to be removed before hashing; no phone sends them.
            return Err(AuthFailure::Malformed(
                "escaped characters in digest parameters",
            ));
        }
        if creds.realm != self.realm.as_bytes() {
            return Err(AuthFailure::WrongRealm);
        }
        let algorithm = match creds.algorithm {
            None => Algorithm::Md5,
            Some(name) => Algorithm::from_name(name).ok_or(AuthFailure::UnsupportedAlgorithm)?,
        };
        if !self.algorithms.contains(&algorithm) {
            return Err(AuthFailure::UnsupportedAlgorithm);
        }
        let qop = creds.qop.ok_or(AuthFailure::UnsupportedQop)?;
        if !qop.eq_ignore_ascii_case(b"auth") {
            return Err(AuthFailure::UnsupportedQop);
        }
        let nc_text = creds.nc.ok_or(AuthFailure::Malformed("nc missing"))?;
        let nc = parse_nc(nc_text).ok_or(AuthFailure::Malformed(
            "nc is not 8 hex digits from 00000001",
        ))?;
        let cnonce = creds
            .cnonce
            .filter(|c| !c.is_empty())
            .ok_or(AuthFailure::Malformed("cnonce missing"))?;
        let mut sent = [0u8; 32];
        let sent_len = decode_hex(creds.response, &mut sent)
            .filter(|&n| n == algorithm.hash_len())
            .ok_or(AuthFailure::Malformed("response is not a hex digest"))?;

        // The nonce first: a guess must cost a fresh challenge, and whether a response is
        // right is only ever said for a fresh nonce of ours (no stale=true oracle).
        let (issued, serial) = self
            .open_nonce(creds.nonce)
            .ok_or(AuthFailure::ForgedNonce)?;
        if now.saturating_sub(issued) > self.ttl_secs {
            return Err(AuthFailure::Stale);
        }
        let ha1 = ha1(algorithm.base())
            .filter(|h| h.algorithm == algorithm.base())
            .ok_or(AuthFailure::UnknownUser)?;
        let input = ResponseInput {
            method,
            uri: creds.uri,
            nonce: creds.nonce,
            nc: nc_text,
            cnonce,
            qop,
        };
        let mut expected = [0u8; 32];
        let expected_len = decode_hex(
            compute_response(algorithm, &ha1, &input).as_bytes(),
            &mut expected,
        )
        .expect("invariant: our own hex decodes");
        if !constant_time_eq(&sent[..sent_len], &expected[..expected_len]) {
            return Err(AuthFailure::BadResponse);
        }
        self.counts
            .record(now, self.ttl_secs, (issued, serial), nc)?;
        Ok(Verified {
            algorithm,
            nc,
            issued,
        })
    }

    fn tag(&self, issued: u64, serial: u64) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(NONCE_CONTEXT);
        mac.update(self.realm.as_bytes());
        mac.update(&[0]);
        mac.update(&issued.to_be_bytes());
        mac.update(&serial.to_be_bytes());
        mac
    }

    fn mint_nonce(&mut self, now: u64, out: &mut [u8; NONCE_TEXT_LEN]) {
        let serial = self.serial;
        // The low 48 bits count; the issuer id above them never changes.
        self.serial = (serial & !SERIAL_MASK) | (serial.wrapping_add(1) & SERIAL_MASK);
        let mut raw = [0u8; NONCE_RAW_LEN];
        raw[..8].copy_from_slice(&now.to_be_bytes());
        raw[8..16].copy_from_slice(&serial.to_be_bytes());
        let tag = self.tag(now, serial).finalize().into_bytes();
        raw[16..].copy_from_slice(&tag[..TAG_LEN]);
        base64url_encode(&raw, out);
    }

    /// `(issued, serial)` of a nonce this key minted for this realm, else `None`.
    fn open_nonce(&self, nonce: &[u8]) -> Option<(u64, u64)> {
        let raw = base64url_decode(nonce)?;
        let issued = u64::from_be_bytes(raw[..8].try_into().ok()?);
        let serial = u64::from_be_bytes(raw[8..16].try_into().ok()?);
        self.tag(issued, serial)
            .verify_truncated_left(&raw[16..])
            .ok()?;
        Some((issued, serial))
    }
}

impl std::fmt::Debug for DigestAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestAuthority")
            .field("realm", &self.realm)
            .field("ttl_secs", &self.ttl_secs)
            .field("algorithms", &self.algorithms)
            .field("tracked_nonces", &self.counts.map.len())
            .finish_non_exhaustive()
    }
}

const SERIAL_MASK: u64 = (1 << 48) - 1;

/// Highest nonce-count accepted per unexpired nonce, bounded.
struct NonceCounts {
    /// `(issued, serial) → highest nc`; ordered by issue time, so expiry and eviction take the
    /// front.
    map: BTreeMap<(u64, u64), u32>,
    capacity: usize,
    /// Nonces issued at or before this second may have been evicted: answered as stale.
    evicted_through: Option<u64>,
}

impl NonceCounts {
    fn new(capacity: usize) -> Self {
        NonceCounts {
            map: BTreeMap::new(),
            capacity,
            evicted_through: None,
        }
    }

    fn record(
        &mut self,
        now: u64,
        ttl: u64,
        nonce: (u64, u64),
        nc: u32,
    ) -> Result<(), AuthFailure> {
        // Expired nonces fail the age check before they get here; forget them.
        while let Some((&(issued, _), _)) = self.map.first_key_value() {
            if now.saturating_sub(issued) <= ttl {
                break;
            }
            self.map.pop_first();
        }
        if let Some(highest) = self.map.get_mut(&nonce) {
            if nc <= *highest {
                return Err(AuthFailure::Replay);
            }
            *highest = nc;
            return Ok(());
        }
        if self.evicted_through.is_some_and(|t| nonce.0 <= t) {
            return Err(AuthFailure::Stale);
        }
        if self.map.len() >= self.capacity {
            if let Some(((issued, _), _)) = self.map.pop_first() {
                self.evicted_through = Some(self.evicted_through.map_or(issued, |t| t.max(issued)));
                if nonce.0 <= issued {
                    return Err(AuthFailure::Stale);
                }
            }
        }
        self.map.insert(nonce, nc);
        Ok(())
    }
}

fn parse_nc(text: &[u8]) -> Option<u32> {
    if text.len() != 8 {
        return None;
    }
    let mut value = 0u32;
    for &c in text {
        value = (value << 4) | u32::from(hex_value(c)?);
    }
    (value > 0).then_some(value)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex into `out`; `None` on odd length, a non-hex byte, or more than `out` holds.
fn decode_hex(hex: &[u8], out: &mut [u8; 32]) -> Option<usize> {
    if hex.len() % 2 != 0 || hex.len() > 64 {
        return None;
    }
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(hex.len() / 2)
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Writes `text` as the inside of a quoted-string (RFC 3261 §25.1).
fn push_quoted(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(raw: &[u8; NONCE_RAW_LEN], out: &mut [u8; NONCE_TEXT_LEN]) {
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut o = 0;
    for &b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out[o] = BASE64URL[((acc >> bits) & 63) as usize];
            o += 1;
        }
    }
    if bits > 0 {
        out[o] = BASE64URL[((acc << (6 - bits)) & 63) as usize];
    }
}

/// Strict inverse of [`base64url_encode`]: exact length, alphabet, zero padding bits, so every
/// nonce has one spelling.
fn base64url_decode(text: &[u8]) -> Option<[u8; NONCE_RAW_LEN]> {
    if text.len() != NONCE_TEXT_LEN {
        return None;
    }
    let mut raw = [0u8; NONCE_RAW_LEN];
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut o = 0;
    for &c in text {
        let v = BASE64URL.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *raw.get_mut(o)? = (acc >> bits) as u8;
            o += 1;
        }
        acc &= (1 << bits) - 1;
    }
    (o == NONCE_RAW_LEN && acc == 0).then_some(raw)
}

#[cfg(test)]
mod tests;
