//! Known-answer vectors (RFC 2617 §3.5, RFC 7616 §3.9.1) and the authority's decisions.

use super::*;

const KEY: [u8; 32] = [7; 32];
const REALM: &str = "sip.example.com";
const TTL: Duration = Duration::from_secs(300);
const T0: u64 = 1_700_000_000;

fn ha1_for(password: &str) -> impl Fn(Algorithm) -> Option<Ha1> + '_ {
    move |alg| {
        Some(Ha1::from_password(
            alg,
            b"1001",
            REALM.as_bytes(),
            password.as_bytes(),
        ))
    }
}

fn nonce_of(challenge: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(challenge).unwrap();
    let start = text.find("nonce=\"").unwrap() + 7;
    let end = start + text[start..].find('"').unwrap();
    text.as_bytes()[start..end].to_vec()
}

/// What a phone does: answers a challenge with `password`, for `nc`.
struct Phone {
    nonce: Vec<u8>,
    algorithm: Algorithm,
    nc: String,
    response: String,
}

impl Phone {
    fn answer(nonce: &[u8], algorithm: Algorithm, password: &str, nc: u32) -> Phone {
        let nc = format!("{nc:08x}");
        let ha1 = Ha1::from_password(algorithm, b"1001", REALM.as_bytes(), password.as_bytes());
        let response = compute_response(
            algorithm,
            &ha1,
            &ResponseInput {
                method: b"REGISTER",
                uri: b"sip:sip.example.com",
                nonce,
                nc: nc.as_bytes(),
                cnonce: b"c0ffee",
                qop: b"auth",
            },
        );
        Phone {
            nonce: nonce.to_vec(),
            algorithm,
            nc,
            response: response.as_str().to_owned(),
        }
    }

    fn creds(&self) -> Credentials<'_> {
        Credentials {
            scheme: b"Digest",
            username: b"1001",
            realm: REALM.as_bytes(),
            nonce: &self.nonce,
            uri: b"sip:sip.example.com",
            response: self.response.as_bytes(),
            algorithm: Some(self.algorithm.name().as_bytes()),
            cnonce: Some(b"c0ffee"),
            qop: Some(b"auth"),
            nc: Some(self.nc.as_bytes()),
            opaque: None,
            escaped: false,
        }
    }
}

fn authority() -> DigestAuthority {
    DigestAuthority::new(KEY, REALM, TTL, &[Algorithm::Sha256, Algorithm::Md5])
}

fn fresh_nonce(auth: &mut DigestAuthority, now: u64) -> Vec<u8> {
    let mut out = Vec::new();
    auth.challenge(now, false, ChallengeHeader::WwwAuthenticate, &mut out);
    nonce_of(&out)
}

#[test]
fn rfc2617_md5_vector() {
    let ha1 = Ha1::from_password(
        Algorithm::Md5,
        b"Mufasa",
        b"testrealm@host.com",
        b"Circle Of Life",
    );
    assert_eq!(
        ha1.hash.to_hex().as_str(),
        "939e7578ed9e3c518a452acee763bce9"
    );
    let response = compute_response(
        Algorithm::Md5,
        &ha1,
        &ResponseInput {
            method: b"GET",
            uri: b"/dir/index.html",
            nonce: b"dcd98b7102dd2f0e8b11d0f600bfb0c093",
            nc: b"00000001",
            cnonce: b"0a4f113b",
            qop: b"auth",
        },
    );
    assert_eq!(response.as_str(), "6629fae49393a05397450978507c4ef1");
}

#[test]
fn rfc7616_md5_and_sha256_vectors() {
    let input = ResponseInput {
        method: b"GET",
        uri: b"/dir/index.html",
        nonce: b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        nc: b"00000001",
        cnonce: b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        qop: b"auth",
    };
    let realm = b"http-auth@example.org";
    let md5 = Ha1::from_password(Algorithm::Md5, b"Mufasa", realm, b"Circle of Life");
    assert_eq!(
        compute_response(Algorithm::Md5, &md5, &input).as_str(),
        "8ca523f5e9506fed4657c9700eebdbec"
    );
    let sha = Ha1::from_password(Algorithm::Sha256, b"Mufasa", realm, b"Circle of Life");
    assert_eq!(
        compute_response(Algorithm::Sha256, &sha, &input).as_str(),
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    );
}

#[test]
fn challenge_lists_each_algorithm_with_one_nonce() {
    let mut auth = authority();
    let mut out = Vec::new();
    auth.challenge(T0, true, ChallengeHeader::ProxyAuthenticate, &mut out);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 2);
    let nonce = String::from_utf8(nonce_of(text.as_bytes())).unwrap();
    assert_eq!(nonce.len(), NONCE_TEXT_LEN);
    assert_eq!(
        lines[0],
        format!("Proxy-Authenticate: Digest realm=\"sip.example.com\", nonce=\"{nonce}\", algorithm=SHA-256, qop=\"auth\", stale=true")
    );
    assert_eq!(
        lines[1],
        format!("Proxy-Authenticate: Digest realm=\"sip.example.com\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\", stale=true")
    );
    // A second challenge carries a different nonce even in the same second.
    assert_ne!(fresh_nonce(&mut auth, T0), nonce.as_bytes());
}

#[test]
fn realm_is_quoted() {
    let mut auth = DigestAuthority::new(KEY, r#"a"b\c"#, TTL, &[Algorithm::Md5]);
    let mut out = Vec::new();
    auth.challenge(T0, false, ChallengeHeader::WwwAuthenticate, &mut out);
    assert!(out.starts_with(br#"WWW-Authenticate: Digest realm="a\"b\\c", nonce=""#));
}

#[test]
fn round_trip_for_every_algorithm() {
    for algorithm in Algorithm::ALL {
        let mut auth = DigestAuthority::new(KEY, REALM, TTL, &[algorithm]);
        let nonce = fresh_nonce(&mut auth, T0);
        let phone = Phone::answer(&nonce, algorithm, "secret", 1);
        let verified = auth.verify(T0 + 2, b"REGISTER", &phone.creds(), ha1_for("secret"));
        assert_eq!(
            verified,
            Ok(Verified {
                algorithm,
                nc: 1,
                issued: T0
            }),
            "{algorithm:?}"
        );
    }
}

#[test]
fn precomputed_ha1_verifies_like_the_password() {
    let mut auth = authority();
    let nonce = fresh_nonce(&mut auth, T0);
    let hex = Ha1::from_password(Algorithm::Sha256, b"1001", REALM.as_bytes(), b"secret")
        .hash
        .to_hex();
    let upper = hex.as_str().to_ascii_uppercase();
    let phone = Phone::answer(&nonce, Algorithm::Sha256, "secret", 1);
    let got = auth.verify(T0, b"REGISTER", &phone.creds(), |alg| {
        Ha1::from_hex(alg, upper.as_bytes())
    });
    assert!(got.is_ok(), "{got:?}");
    assert!(
        Ha1::from_hex(Algorithm::Md5, hex.as_bytes()).is_none(),
        "SHA-256 length is not MD5"
    );
    assert!(Ha1::from_hex(Algorithm::Md5, b"zz").is_none());
}

#[test]
fn wrong_password_is_forbidden() {
    let mut auth = authority();
    let nonce = fresh_nonce(&mut auth, T0);
    let phone = Phone::answer(&nonce, Algorithm::Sha256, "guess", 1);
    let got = auth.verify(T0, b"REGISTER", &phone.creds(), ha1_for("secret"));
    assert_eq!(got, Err(AuthFailure::BadResponse));
    assert_eq!(AuthFailure::BadResponse.answer(), AuthAnswer::Forbidden);
    // The method is covered: the same response for another method fails.
    let phone = Phone::answer(&nonce, Algorithm::Sha256, "secret", 2);
    assert_eq!(
        auth.verify(T0, b"INVITE", &phone.creds(), ha1_for("secret")),
        Err(AuthFailure::BadResponse)
    );
}

#[test]
fn unknown_user_is_forbidden_like_a_wrong_password() {
    let mut auth = authority();
    let nonce = fresh_nonce(&mut auth, T0);
    let phone = Phone::answer(&nonce, Algorithm::Sha256, "secret", 1);
    let got = auth.verify(T0, b"REGISTER", &phone.creds(), |_| None);
    assert_eq!(got, Err(AuthFailure::UnknownUser));
    assert_eq!(got.unwrap_err().answer(), AuthAnswer::Forbidden);
    // An HA1 for the wrong base algorithm counts as no credential.
    let got = auth.verify(T0, b"REGISTER", &phone.creds(), |_| {
        Some(Ha1::from_password(
            Algorithm::Md5,
            b"1001",
            REALM.as_bytes(),
            b"secret",
        ))
    });
    assert_eq!(got, Err(AuthFailure::UnknownUser));
}

#[test]
fn nonce_goes_stale_after_ttl() {
    let mut auth = authority();
    let nonce = fresh_nonce(&mut auth, T0);
    let phone = Phone::answer(&nonce, Algorithm::Sha256, "secret", 1);
    assert!(auth
        .verify(T0 + 300, b"REGISTER", &phone.creds(), ha1_for("secret"))
        .is_ok());
    let phone = Phone::answer(&nonce, Algorithm::Sha256, "secret", 2);
    let got = auth.verify(T0 + 301, b"REGISTER", &phone.creds(), ha1_for("secret"));
    assert_eq!(got, Err(AuthFailure::Stale));
    assert_eq!(
        got.unwrap_err().answer(),
        AuthAnswer::Challenge { stale: true }
    );
    // Expired nonces leave the replay map.
    assert_eq!(auth.tracked_nonces(), 1);
    let fresh = fresh_nonce(&mut auth, T0 + 301);
    let phone = Phone::answer(&fresh, Algorithm::Sha256, "secret", 1);
    assert!(auth
        .verify(T0 + 302, b"REGISTER", &phone.creds(), ha1_for("secret"))
        .is_ok());
    assert_eq!(auth.tracked_nonces(), 1);
}

#[test]
fn nonce_count_must_increase() {
    let mut auth = authority();
    let nonce = fresh_nonce(&mut auth, T0);
    let first = Phone::answer(&nonce, Algorithm::Sha256, "secret", 1);
    assert!(auth
        .verify(T0, b"REGISTER", &first.creds(), ha1_for("secret"))
        .is_ok());
    let replay = auth.verify(T0 + 1, b"REGISTER", &first.creds(), ha1_for("secret"));
    assert_eq!(replay, Err(AuthFailure::Replay));
    assert_eq!(
        AuthFailure::Replay.answer(),
        AuthAnswer::Challenge { stale: true }
    );
    let fifth = Phone::answer(&nonce, Algorithm::Sha256, "secret", 5);
    assert!(auth
        .verify(T0 + 2, b"REGISTER", &fifth.creds(), ha1_for("secret"))
        .is_ok());
    let third = Phone::answer(&nonce, Algorithm::Sha256, "secret", 3);
    assert_eq!(
        auth.verify(T0 + 3, b"REGISTER", &third.creds(), ha1_for("secret")),
        Err(AuthFailure::Replay)
    );
    let sixth = Phone::answer(&nonce, Algorithm::Sha256, "secret", 6);
    assert!(auth
        .verify(T0 + 4, b"REGISTER", &sixth.creds(), ha1_for("secret"))
        .is_ok());
}

#[test]
fn tampered_nonce_is_refused_before_the_response_is_looked_at() {
    let mut auth = authority();
    let mut nonce = fresh_nonce(&mut auth, T0);
    nonce[3] = if nonce[3] == b'A' { b'B' } else { b'A' };
    // Right and wrong passwords get the same answer: a made-up nonce is no password oracle.
    for password in ["secret", "guess"] {
        let phone = Phone::answer(&nonce, Algorithm::Sha256, password, 1);
        let got = auth.verify(T0, b"REGISTER", &phone.creds(), ha1_for("secret"));
        assert_eq!(got, Err(AuthFailure::ForgedNonce), "{password}");
        assert_eq!(
            AuthFailure::ForgedNonce.answer(),
            AuthAnswer::Challenge { stale: false }
        );
    }
    // Garbage and foreign nonces too (a phone still holding a pre-restart nonce).
    for bad in [
        &b"short"[..],
        &[b'A'; NONCE_TEXT_LEN][..],
        b"dcd98b7102dd2f0e8b11d0f600bfb0c093",
    ] {
        let phone = Phone::answer(bad, Algorithm::Sha256, "secret", 1);
        assert_eq!(
            auth.verify(T0, b"REGISTER", &phone.creds(), ha1_for("secret")),
            Err(AuthFailure::ForgedNonce)
        );
    }
    // Extending the issue time (a forged "younger" nonce) breaks the tag.
    let mut raw = base64url_decode(&fresh_nonce(&mut auth, T0)).unwrap();
    raw[7] ^= 1;
    let mut forged = [0u8; NONCE_TEXT_LEN];
    base64url_encode(&raw, &mut forged);
    let phone = Phone::answer(&forged, Algorithm::Sha256, "secret", 1);
    assert_eq!(
        auth.verify(T0, b"REGISTER", &phone.creds(), ha1_for("secret")),
        Err(AuthFailure::ForgedNonce)
    );
}

#[test]
fn an_expired_nonce_is_stale_whatever_the_response() {
    let mut auth = authority();
    let nonce = fresh_nonce(&mut auth, T0);
    let later = T0 + TTL.as_secs() + 1;
    for password in ["secret", "guess"] {
        let phone = Phone::answer(&nonce, Algorithm::Sha256, password, 1);
        assert_eq!(
            auth.verify(later, b"REGISTER", &phone.creds(), ha1_for("secret")),
            Err(AuthFailure::Stale),
            "{password}"
        );
    }
}

#[test]
fn any_shard_verifies_any_shards_nonce() {
    let mut shard_a = authority().with_issuer(0);
    let mut shard_b = authority().with_issuer(1);
    let from_a = fresh_nonce(&mut shard_a, T0);
    let from_b = fresh_nonce(&mut shard_b, T0);
    assert_ne!(from_a, from_b, "issuer ids keep same-second nonces apart");
    let phone = Phone::answer(&from_a, Algorithm::Sha256, "secret", 1);
    assert!(shard_b
        .verify(T0, b"REGISTER", &phone.creds(), ha1_for("secret"))
        .is_ok());
    // Another boot (another key) does not accept it.
    let mut rebooted = DigestAuthority::new([8; 32], REALM, TTL, &[Algorithm::Sha256]);
    assert_eq!(
        rebooted.verify(T0, b"REGISTER", &phone.creds(), ha1_for("secret")),
        Err(AuthFailure::ForgedNonce)
    );
}

#[test]
fn only_offered_algorithms_and_qop_auth_are_accepted() {
    let mut auth = DigestAuthority::new(KEY, REALM, TTL, &[Algorithm::Sha256]);
    let nonce = fresh_nonce(&mut auth, T0);
    let md5 = Phone::answer(&nonce, Algorithm::Md5, "secret", 1);
    assert_eq!(
        auth.verify(T0, b"REGISTER", &md5.creds(), ha1_for("secret")),
        Err(AuthFailure::UnsupportedAlgorithm)
    );
    let mut no_algorithm = md5.creds();
    no_algorithm.algorithm = None; // means MD5
    assert_eq!(
        auth.verify(T0, b"REGISTER", &no_algorithm, ha1_for("secret")),
        Err(AuthFailure::UnsupportedAlgorithm)
    );
    let sha = Phone::answer(&nonce, Algorithm::Sha256, "secret", 1);
    let mut creds = sha.creds();
    creds.algorithm = Some(b"SHA-512-256");
    assert_eq!(
        auth.verify(T0, b"REGISTER", &creds, ha1_for("secret")),
        Err(AuthFailure::UnsupportedAlgorithm)
    );
    let mut creds = sha.creds();
    creds.algorithm = Some(b"sha-256"); // tokens are case-insensitive
    assert!(auth
        .verify(T0, b"REGISTER", &creds, ha1_for("secret"))
        .is_ok());
    for qop in [None, Some(&b"auth-int"[..])] {
        let mut creds = sha.creds();
        creds.qop = qop;
        assert_eq!(
            auth.verify(T0, b"REGISTER", &creds, ha1_for("secret")),
            Err(AuthFailure::UnsupportedQop)
        );
    }
}

#[test]
fn malformed_parameters_are_bad_requests() {
    let mut auth = authority();
    let nonce = fresh_nonce(&mut auth, T0);
    let phone = Phone::answer(&nonce, Algorithm::Sha256, "secret", 1);
    type Mutation = fn(&mut Credentials<'_>);
    let cases: [(&str, Mutation); 6] = [
        ("nc missing", |c| c.nc = None),
        ("nc short", |c| c.nc = Some(b"0001")),
        ("nc zero", |c| c.nc = Some(b"00000000")),
        ("nc not hex", |c| c.nc = Some(b"0000000g")),
        ("cnonce missing", |c| c.cnonce = None),
        ("response not hex", |c| c.response = b"xyz"),
    ];
    for (name, mutate) in cases {
        let mut creds = phone.creds();
        mutate(&mut creds);
        let got = auth.verify(T0, b"REGISTER", &creds, ha1_for("secret"));
        assert!(
            matches!(got, Err(AuthFailure::Malformed(_))),
            "{name}: {got:?}"
        );
        assert_eq!(got.unwrap_err().answer(), AuthAnswer::BadRequest);
    }
    let mut creds = phone.creds();
    creds.response = &phone.response.as_bytes()[..32]; // MD5 length for a SHA-256 answer
    assert!(matches!(
        auth.verify(T0, b"REGISTER", &creds, ha1_for("secret")),
        Err(AuthFailure::Malformed(_))
    ));
}

#[test]
fn scheme_and_realm_must_be_ours() {
    let mut auth = authority();
    let nonce = fresh_nonce(&mut auth, T0);
    let phone = Phone::answer(&nonce, Algorithm::Sha256, "secret", 1);
    let mut creds = phone.creds();
    creds.scheme = b"Basic";
    assert_eq!(
        auth.verify(T0, b"REGISTER", &creds, ha1_for("secret")),
        Err(AuthFailure::UnsupportedScheme)
    );
    let mut creds = phone.creds();
    creds.scheme = b"digest";
    assert!(auth
        .verify(T0, b"REGISTER", &creds, ha1_for("secret"))
        .is_ok());
    let mut creds = phone.creds();
    creds.realm = b"other.example.com";
    assert_eq!(
        auth.verify(T0, b"REGISTER", &creds, ha1_for("secret")),
        Err(AuthFailure::WrongRealm)
    );
}

#[test]
fn replay_map_is_bounded_and_eviction_never_reopens_a_replay() {
    let mut auth = authority().with_replay_capacity(2);
    let n1 = fresh_nonce(&mut auth, T0);
    let n2 = fresh_nonce(&mut auth, T0 + 1);
    let n3 = fresh_nonce(&mut auth, T0 + 2);
    for nonce in [&n1, &n2, &n3] {
        let phone = Phone::answer(nonce, Algorithm::Sha256, "secret", 1);
        assert!(auth
            .verify(T0 + 3, b"REGISTER", &phone.creds(), ha1_for("secret"))
            .is_ok());
        assert!(auth.tracked_nonces() <= 2);
    }
    // n1 was evicted: its replay is not accepted as a first use; the phone is told to renew.
    let replay = Phone::answer(&n1, Algorithm::Sha256, "secret", 1);
    assert_eq!(
        auth.verify(T0 + 4, b"REGISTER", &replay.creds(), ha1_for("secret")),
        Err(AuthFailure::Stale)
    );
    // n3 is still tracked.
    let replay = Phone::answer(&n3, Algorithm::Sha256, "secret", 1);
    assert_eq!(
        auth.verify(T0 + 4, b"REGISTER", &replay.creds(), ha1_for("secret")),
        Err(AuthFailure::Replay)
    );
}

#[test]
fn nonce_encoding_is_canonical() {
    let raw: [u8; NONCE_RAW_LEN] = std::array::from_fn(|i| (i * 37) as u8);
    let mut text = [0u8; NONCE_TEXT_LEN];
    base64url_encode(&raw, &mut text);
    assert_eq!(base64url_decode(&text), Some(raw));
    // The last character carries 2 padding bits; a non-zero padding spelling is rejected.
    let mut other = text;
    let last = BASE64URL
        .iter()
        .position(|&c| c == other[NONCE_TEXT_LEN - 1])
        .unwrap();
    other[NONCE_TEXT_LEN - 1] = BASE64URL[last | 1];
    assert_ne!(other, text);
    assert_eq!(base64url_decode(&other), None);
    assert_eq!(base64url_decode(b"+/=="), None);
}

#[test]
fn algorithm_names_round_trip() {
    for a in Algorithm::ALL {
        assert_eq!(Algorithm::from_name(a.name().as_bytes()), Some(a));
        assert_eq!(
            Algorithm::from_name(a.name().to_ascii_lowercase().as_bytes()),
            Some(a)
        );
    }
    assert_eq!(Algorithm::from_name(b"SHA-512"), None);
    assert!(Algorithm::Md5Sess.is_session() && !Algorithm::Sha256.is_session());
    assert_eq!(Algorithm::Sha256Sess.hash_len(), 32);
}
