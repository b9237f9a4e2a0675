//! Digest authentication as the registrar and the proxy use it (RFC 3261 §22.1, §22.4; RFC 8760;
//! DECISIONS.md "Proxy": REGISTER gets 401 with WWW-Authenticate, other initial requests 407 with
//! Proxy-Authenticate, wrong credentials 403).
//!
//! [`Auth`] owns the shard's [`DigestAuthority`] (stateless HMAC nonces under the process secret,
//! bounded nonce-count replay map) and turns a request into an [`AuthOutcome`]; [`Auth::reply`]
//! writes the answer for the outcomes that end the request. Who is exempt (trusted peers,
//! in-dialog requests, CANCEL, ACK) is the caller's decision, not this module's.
//!
//! Guessing is throttled (`throttle.rs`): a wrong response to a fresh nonce counts against the
//! (source address, username) pair and the address; blocked senders are dropped unanswered.
//!
//! Invariant: [`AuthOutcome::Authorized`] is returned only for credentials of our realm whose
//! response verified against the configured secret of `user`, on a fresh nonce of ours with a
//! new nonce-count, for a digest-uri that names the request's Request-URI.

pub mod identity;
pub mod throttle;

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{AuthMode, Config};
use crate::core::context::Cx;
use crate::core::metrics::{MetricSink, ReasonCounters};
use crate::core::notice::Notice;
use crate::core::registrar::digest::{AuthAnswer, AuthFailure, DigestAuthority};
use crate::core::reply::reply_to;
use crate::core::shard::ShardId;
use crate::sip::{Essentials, HeaderName, Message, ParseError, Uri};
use throttle::{Blocked, Throttle};

pub use crate::core::registrar::digest::ChallengeHeader;

/// What authentication decided about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOutcome<'b> {
    /// `auth.mode = "none"`: nothing is checked.
    NotRequired,
    /// Valid credentials of `user` (the digest username, an extension number).
    Authorized {
        /// The authenticated username.
        user: &'b [u8],
    },
    /// Credentials that verified but reuse a nonce-count: a retransmission of a request already
    /// accepted, or a replay. Changes nothing; a REGISTER that is a retransmission may be
    /// answered with the current bindings, anything else gets a `stale=true` challenge.
    Replayed {
        /// The username the credentials verified for.
        user: &'b [u8],
    },
    /// Answer 401/407 with a fresh challenge.
    Challenge {
        /// `stale=true`: the password was right, only the nonce was not.
        stale: bool,
    },
    /// Answer 403 with this reason phrase.
    Forbidden(&'static str),
    /// Answer 400; the detail names what was malformed.
    BadRequest(&'static str),
    /// The sender is blocked for guessing: drop the request without an answer.
    Blocked,
}

/// Failure reasons, as metric labels.
const FAILURES: [&str; 11] = [
    "unsupported_scheme",
    "wrong_realm",
    "malformed",
    "unsupported_algorithm",
    "unsupported_qop",
    "unknown_user",
    "bad_response",
    "stale",
    "replay",
    "uri_mismatch",
    "forged_nonce",
];
const URI_MISMATCH: usize = 9;

fn failure_index(f: AuthFailure) -> Option<usize> {
    Some(match f {
        AuthFailure::Missing => return None,
        AuthFailure::UnsupportedScheme => 0,
        AuthFailure::WrongRealm => 1,
        AuthFailure::Malformed(_) => 2,
        AuthFailure::UnsupportedAlgorithm => 3,
        AuthFailure::UnsupportedQop => 4,
        AuthFailure::UnknownUser => 5,
        AuthFailure::BadResponse => 6,
        AuthFailure::Stale => 7,
        AuthFailure::Replay => 8,
        AuthFailure::ForgedNonce => 10,
    })
}

/// The 403 reason phrase for wrong credentials (unknown user and wrong password alike, so an
/// answer never tells which extensions exist).
pub const WRONG_CREDENTIALS: &str = "Forbidden - wrong credentials";

/// One shard's digest authentication.
pub struct Auth {
    /// `None` when `auth.mode = "none"`.
    authority: Option<DigestAuthority>,
    /// Challenge rows of the response being written (kept to avoid allocating per challenge).
    scratch: Vec<u8>,
    challenges: [u64; 2],
    successes: u64,
    failures: ReasonCounters<11>,
    throttle: Throttle,
    /// Blocks started, by kind (pair, address).
    blocks: [u64; 2],
    /// Requests dropped because their sender was blocked, by kind (pair, address).
    blocked_requests: [u64; 2],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Authentication for shard `shard` as `cfg` says, with nonces keyed by the process-wide
    /// `secret` (the same on every shard, so any shard verifies any shard's nonce).
    pub fn new(cfg: &Config, secret: [u8; 32], shard: ShardId) -> Auth {
        let authority = match cfg.auth.mode {
            AuthMode::None => None,
            AuthMode::Digest => Some(
                DigestAuthority::new(
                    secret,
                    &cfg.auth.realm,
                    Duration::from_secs(cfg.auth.nonce_ttl.as_secs()),
                    &cfg.auth.algorithms,
                )
                .with_issuer(shard.0),
            ),
        };
        Auth {
            authority,
            scratch: Vec::new(),
            challenges: [0; 2],
            successes: 0,
            failures: ReasonCounters::default(),
            throttle: Throttle::new(&cfg.security),
            blocks: [0; 2],
            blocked_requests: [0; 2],
        }
    }

    /// Is the sender's address blocked as a whole? (Checked before any work on its requests.)
    /// `exempt` is asked only when the address is blocked: a request it exempts (a certificate
    /// trunk's, which a guesser behind the same address must not shut out) is not.
    pub fn source_blocked(
        &mut self,
        now: crate::time::Instant,
        source: SocketAddr,
        exempt: impl FnOnce() -> bool,
    ) -> bool {
        let blocked =
            self.throttle.check(now, source.ip(), None) == Some(Blocked::Source) && !exempt();
        if blocked {
            self.blocked_requests[1] += 1;
        }
        blocked
    }

    /// Ends the blocks that ran out (the `AuthSweep` timer), one log line each.
    pub fn sweep(&mut self, cx: &mut Cx<'_>) {
        for ev in self.throttle.sweep(cx.now) {
            cx.notices.push(Notice::Unblocked {
                source: ev.source,
                user: ev.user,
            });
        }
        if let Some(at) = self.throttle.next_unblock() {
            cx.timers.insert(at, crate::core::TimerKey::AuthSweep);
        }
    }

    /// Counts a failed guess and starts the blocks it crosses into (log line and sweep timer).
    fn guessed_wrong(&mut self, cx: &mut Cx<'_>, source: SocketAddr, user: &[u8]) {
        for ev in self.throttle.failure(cx.now, source.ip(), user) {
            self.blocks[usize::from(ev.user.is_none())] += 1;
            cx.notices.push(Notice::Blocked {
                source: ev.source,
                user: ev.user,
                failures: ev.failures,
            });
            let until = cx.now + cx.cfg.security.block;
            cx.timers.insert(until, crate::core::TimerKey::AuthSweep);
        }
    }

    /// True when requests are challenged at all.
    pub fn enabled(&self) -> bool {
        self.authority.is_some()
    }

    /// Checks the credentials `req` carries for our realm in the header that answers
    /// `challenge` (`Authorization` for WWW-Authenticate, `Proxy-Authorization` for
    /// Proxy-Authenticate). Credentials of other schemes (RFC 4475 `regaut01`) and other realms
    /// are ignored, as if absent.
    pub fn check<'b>(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'b>,
        e: &Essentials<'b>,
        challenge: ChallengeHeader,
        source: SocketAddr,
    ) -> AuthOutcome<'b> {
        if self.authority.is_none() {
            return AuthOutcome::NotRequired;
        }
        let name = match challenge {
            ChallengeHeader::WwwAuthenticate => HeaderName::Authorization,
            ChallengeHeader::ProxyAuthenticate => HeaderName::ProxyAuthorization,
        };
        let realm = cx.cfg.auth.realm.as_bytes();
        let mut ours = None;
        for row in req.authorizations(name) {
            match row {
                Ok(creds) if creds.realm == realm => {
                    ours = Some(creds);
                    break;
                }
                Ok(_) | Err(ParseError::UnsupportedAuthScheme) => {}
                Err(_) => {
                    self.failures.bump(2);
                    return AuthOutcome::BadRequest("malformed credentials");
                }
            }
        }
        let Some(creds) = ours else {
            return AuthOutcome::Challenge { stale: false };
        };
        match self
            .throttle
            .check(cx.now, source.ip(), Some(creds.username))
        {
            None => {}
            Some(kind) => {
                self.blocked_requests[usize::from(kind == Blocked::Source)] += 1;
                return AuthOutcome::Blocked;
            }
        }
        //= rfc7616#section-3.4.6
        //# the server SHOULD check that the digest-uri matches the Request-URI; 400 otherwise
        // Also accepted: a digest-uri naming sipfork itself (no user, our address or domain), as
        // SIPp 3.6 writes whatever the Request-URI; the response still covers that uri, and the
        // nonce-count stops replays.
        let uri_matches = creds.uri == e.request_uri.raw()
            || Uri::parse(creds.uri).is_ok_and(|u| {
                u.equivalent(&e.request_uri)
                    || u.as_sip().is_some_and(|s| {
                        s.user.is_none() && cx.cfg.is_local_domain(s.host_raw, s.port)
                    })
            });
        if !uri_matches {
            self.failures.bump(URI_MISMATCH);
            return AuthOutcome::BadRequest("digest uri does not match the Request-URI");
        }
        let cfg = cx.cfg;
        let username = creds.username;
        let Some(authority) = self.authority.as_mut() else {
            return AuthOutcome::NotRequired;
        };
        let verified = authority.verify(
            cx.env.wall_secs(cx.now),
            e.method.as_bytes(),
            &creds,
            |algorithm| {
                cfg.extension(username)?
                    .credential()
                    .ha1(algorithm, username, realm)
            },
        );
        match verified {
            Ok(_) => {
                self.successes += 1;
                AuthOutcome::Authorized { user: username }
            }
            Err(failure) => {
                if let Some(i) = failure_index(failure) {
                    self.failures.bump(i);
                }
                if matches!(failure, AuthFailure::BadResponse | AuthFailure::UnknownUser) {
                    // A wrong answer to a fresh nonce of ours: a guess (throttle.rs), and a line
                    // for the operator's log.
                    cx.notices.push(Notice::DigestRefused {
                        source: source.ip(),
                        user: username.to_vec(),
                        reason: failure.reason(),
                    });
                    self.guessed_wrong(cx, source, username);
                }
                match (failure, failure.answer()) {
                    (AuthFailure::Replay, _) => AuthOutcome::Replayed { user: username },
                    (_, AuthAnswer::Challenge { stale }) => AuthOutcome::Challenge { stale },
                    (_, AuthAnswer::Forbidden) => AuthOutcome::Forbidden(WRONG_CREDENTIALS),
                    (_, AuthAnswer::BadRequest) => AuthOutcome::BadRequest(failure.reason()),
                }
            }
        }
    }

    /// Appends one challenge row per offered algorithm, all with one fresh nonce.
    /// Does nothing when authentication is off.
    pub fn write_challenge(
        &mut self,
        cx: &Cx<'_>,
        stale: bool,
        header: ChallengeHeader,
        out: &mut Vec<u8>,
    ) {
        if let Some(authority) = self.authority.as_mut() {
            self.challenges[header as usize] += 1;
            authority.challenge(cx.env.wall_secs(cx.now), stale, header, out);
        }
    }

    /// Answers `req` for an outcome that ends it: 401/407 with a challenge (also for
    /// [`AuthOutcome::Replayed`], with `stale=true`), 403, or 400. Returns false, sending
    /// nothing, for [`AuthOutcome::NotRequired`] and [`AuthOutcome::Authorized`].
    pub fn reply(
        &mut self,
        cx: &mut Cx<'_>,
        req: &Message<'_>,
        from: SocketAddr,
        header: ChallengeHeader,
        outcome: &AuthOutcome<'_>,
    ) -> bool {
        match *outcome {
            AuthOutcome::NotRequired | AuthOutcome::Authorized { .. } => false,
            AuthOutcome::Blocked => true,
            AuthOutcome::Challenge { .. } | AuthOutcome::Replayed { .. } => {
                let stale = match *outcome {
                    AuthOutcome::Challenge { stale } => stale,
                    _ => true,
                };
                let mut rows = std::mem::take(&mut self.scratch);
                rows.clear();
                self.write_challenge(cx, stale, header, &mut rows);
                let (status, reason) = match header {
                    ChallengeHeader::WwwAuthenticate => (401, "Unauthorized"),
                    ChallengeHeader::ProxyAuthenticate => (407, "Proxy Authentication Required"),
                };
                reply_to(cx, req, from, status, reason, &rows);
                self.scratch = rows;
                true
            }
            AuthOutcome::Forbidden(reason) => {
                reply_to(cx, req, from, 403, reason, b"");
                true
            }
            AuthOutcome::BadRequest(detail) => {
                // Error path only: the phrase names what was wrong for whoever debugs the phone.
                let reason = format!("Bad Request - {detail}");
                reply_to(cx, req, from, 400, &reason, b"");
                true
            }
        }
    }

    /// Writes the authentication counters of this shard.
    pub fn export_metrics(&self, sink: &mut MetricSink, labels: &[(&'static str, &str)]) {
        for (i, header) in ["www-authenticate", "proxy-authenticate"]
            .into_iter()
            .enumerate()
        {
            let mut l = labels.to_vec();
            l.push(("header", header));
            sink.counter(
                "sipfork_auth_challenges_total",
                "Digest challenges sent (401/407), by header",
                &l,
                self.challenges[i],
            );
        }
        sink.counter(
            "sipfork_auth_successes_total",
            "Requests whose digest credentials verified",
            labels,
            self.successes,
        );
        self.failures.export(
            sink,
            "sipfork_auth_failures_total",
            "Digest credentials refused, by reason",
            &FAILURES,
            labels,
        );
        for (i, kind) in ["user", "address"].into_iter().enumerate() {
            let mut l = labels.to_vec();
            l.push(("kind", kind));
            sink.counter(
                "sipfork_auth_blocks_total",
                "Guessing blocks started ([security]), by kind: a (source, username) pair or a whole address",
                &l,
                self.blocks[i],
            );
            sink.counter(
                "sipfork_auth_blocked_requests_total",
                "Requests dropped unanswered because their sender was blocked, by kind",
                &l,
                self.blocked_requests[i],
            );
        }
    }
}
