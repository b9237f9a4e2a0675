//! `[features]`: dialog-aware feature codes a device dials to act on its extension's answered
//! call (`docs/features.md`).
//!
//! ```toml
//! [features]
//! move = "*75"   # take over the extension's answered call on this device (RFC 3891 Replaces)
//! join = "*74"   # join the extension's answered call from this device (RFC 3911 Join)
//! ```
//!
//! Both are off when absent. A code is `*` or `#` followed by 1 to 7 of `0-9*#`; a device may
//! dial the code alone (its own extension's call) or the code followed by its extension's number.

/// What a feature code does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Move the answered call to the dialling device (`Replaces`).
    Move,
    /// Join the answered call from the dialling device (`Join`).
    Join,
}

/// The configured feature codes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureCodes {
    /// `[features] move`.
    pub move_code: Option<String>,
    /// `[features] join`.
    pub join_code: Option<String>,
}

impl FeatureCodes {
    /// The feature a dialled number asks for, and the number written after the code (empty when
    /// the code was dialled alone).
    pub fn lookup<'n>(&self, number: &'n [u8]) -> Option<(Feature, &'n [u8])> {
        [
            (Feature::Move, self.move_code.as_deref()),
            (Feature::Join, self.join_code.as_deref()),
        ]
        .into_iter()
        .find_map(|(f, code)| {
            let rest = number.strip_prefix(code?.as_bytes())?;
            rest.iter().all(u8::is_ascii_digit).then_some((f, rest))
        })
    }

    /// Whether any feature code is configured.
    pub fn any(&self) -> bool {
        self.move_code.is_some() || self.join_code.is_some()
    }
}

/// `[features]` from its raw form: `(key, why)` when a code is malformed, or one code begins
/// with the other (a dialled number would be ambiguous).
pub(super) fn build(
    move_code: Option<String>,
    join_code: Option<String>,
) -> Result<FeatureCodes, (&'static str, String)> {
    if let Some(c) = &move_code {
        check_code(c).map_err(|why| ("features.move", why))?;
    }
    if let Some(c) = &join_code {
        check_code(c).map_err(|why| ("features.join", why))?;
    }
    if let (Some(m), Some(j)) = (&move_code, &join_code) {
        if m.starts_with(j.as_str()) || j.starts_with(m.as_str()) {
            return Err((
                "features.join",
                format!("`{j}` and the move code `{m}` begin alike: a dialled number would be ambiguous"),
            ));
        }
    }
    Ok(FeatureCodes {
        move_code,
        join_code,
    })
}

/// Checks one code; the error is the "why" shown to the operator.
pub(super) fn check_code(code: &str) -> Result<(), String> {
    let b = code.as_bytes();
    let ok = (2..=8).contains(&b.len())
        && matches!(b[0], b'*' | b'#')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'*' | b'#'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{code}` is not a feature code: `*` or `#` followed by 1 to 7 of 0-9, `*`, `#`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_alone_or_with_a_number() {
        let f = FeatureCodes {
            move_code: Some("*75".into()),
            join_code: Some("*74".into()),
        };
        assert_eq!(f.lookup(b"*75"), Some((Feature::Move, &b""[..])));
        assert_eq!(f.lookup(b"*741000"), Some((Feature::Join, &b"1000"[..])));
        assert_eq!(f.lookup(b"*7"), None);
        assert_eq!(f.lookup(b"*75x"), None);
        assert_eq!(f.lookup(b"1000"), None);
        assert_eq!(FeatureCodes::default().lookup(b"*75"), None);
        assert!(check_code("*75").is_ok());
        assert!(check_code("75").is_err());
        assert!(check_code("*").is_err());
        assert!(check_code("*7a").is_err());
    }

    #[test]
    fn the_file_names_the_wrong_key() {
        let base =
            "[server]\nlisten = \"127.0.0.1:5060\"\n[[extensions]]\nnumbers = \"1000-1099\"\npassword = \"pw\"\n";
        let cfg = crate::config::Config::from_toml(&format!(
            "{base}[features]\nmove = \"*75\"\njoin = \"*74\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.features.lookup(b"*75"), Some((Feature::Move, &b""[..])));
        let absent = crate::config::Config::from_toml(base).unwrap();
        assert!(!absent.features.any());
        for (text, key) in [
            ("[features]\nmove = \"75\"\n", "features.move"),
            ("[features]\njoin = \"*7x\"\n", "features.join"),
            (
                "[features]\nmove = \"*7\"\njoin = \"*74\"\n",
                "features.join",
            ),
            ("[features]\npark = \"*70\"\n", "park"),
        ] {
            let err = crate::config::Config::from_toml(&format!("{base}{text}"))
                .err()
                .unwrap_or_else(|| panic!("{text} must be refused"))
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
