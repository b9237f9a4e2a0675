//! `[overload]`: load shedding and per-source request rate limits (docs/overload.md).

use std::time::Duration;

use serde::Deserialize;

/// `[overload]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverload {
    pub enabled: Option<bool>,
    pub window_ms: Option<u64>,
    pub busy_high: Option<u32>,
    pub busy_low: Option<u32>,
    pub backlog_high: Option<u32>,
    pub backlog_share: Option<u32>,
    pub step_up: Option<u32>,
    pub step_down: Option<u32>,
    pub max_reduction: Option<u32>,
    pub retry_after: Option<u32>,
    pub register_share: Option<u32>,
    pub oc_validity_ms: Option<u32>,
    pub rate_limit: Option<u32>,
    pub rate_burst: Option<u32>,
    pub rate_sources: Option<u32>,
}

/// `[overload]`: when a shard sheds new work, and how fast one source address may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverloadConfig {
    /// Shedding on or off (rate limits have their own switch: `rate_limit = 0`).
    pub enabled: bool,
    /// The engine's load samples are judged per window of this length.
    pub window: Duration,
    /// A window in which the shard worked at least this percent of the time is overloaded.
    pub busy_high: u32,
    /// A window below this percent busy (and without backlog) lowers the reduction.
    pub busy_low: u32,
    /// A turn that handled at least this many datagrams and letters took a full batch.
    pub backlog_high: u32,
    /// A window in which at least this percent of the busy turns were full is overloaded (the
    /// receive queue never drained).
    pub backlog_share: u32,
    /// Percentage points the reduction rises per overloaded window.
    pub step_up: u32,
    /// Percentage points it falls per calm window.
    pub step_down: u32,
    /// The highest reduction (percent of new INVITEs refused).
    pub max_reduction: u32,
    /// `Retry-After` seconds of a shed request's 503.
    pub retry_after: u32,
    /// Percent of REGISTERs that are still served at any reduction.
    pub register_share: u32,
    /// RFC 7339 `oc-validity` (ms) toward peers that announce `oc` support.
    pub oc_validity_ms: u32,
    /// Requests per second one source IP may send (token bucket); 0 = no limit.
    pub rate_limit: u32,
    /// Bucket size: requests a source may send at once.
    pub rate_burst: u32,
    /// Source addresses tracked per shard at most (beyond it new sources are not limited).
    pub rate_sources: u32,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            enabled: true,
            window: Duration::from_millis(100),
            busy_high: 90,
            busy_low: 70,
            backlog_high: 48,
            backlog_share: 90,
            step_up: 10,
            step_down: 2,
            max_reduction: 95,
            retry_after: 5,
            register_share: 50,
            oc_validity_ms: 1000,
            rate_limit: 500,
            rate_burst: 2000,
            rate_sources: 65_536,
        }
    }
}

/// Validates `[overload]`; an error names the key and why.
pub(super) fn build(raw: RawOverload) -> Result<OverloadConfig, (String, String)> {
    let d = OverloadConfig::default();
    let range = |key: &str, v: Option<u32>, default: u32, lo: u32, hi: u32| {
        let v = v.unwrap_or(default);
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err((
                format!("overload.{key}"),
                format!("must be between {lo} and {hi}, not {v}"),
            ))
        }
    };
    let window_ms = raw.window_ms.unwrap_or(d.window.as_millis() as u64);
    if !(10..=10_000).contains(&window_ms) {
        return Err((
            "overload.window_ms".into(),
            format!("must be between 10 and 10000, not {window_ms}"),
        ));
    }
    let busy_high = range("busy_high", raw.busy_high, d.busy_high, 1, 100)?;
    let busy_low = range("busy_low", raw.busy_low, d.busy_low, 0, 100)?;
    if busy_low > busy_high {
        return Err((
            "overload.busy_low".into(),
            format!("must not exceed busy_high ({busy_high})"),
        ));
    }
    let rate_limit = range("rate_limit", raw.rate_limit, d.rate_limit, 0, 10_000_000)?;
    Ok(OverloadConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        window: Duration::from_millis(window_ms),
        busy_high,
        busy_low,
        backlog_high: range("backlog_high", raw.backlog_high, d.backlog_high, 1, 1 << 20)?,
        backlog_share: range("backlog_share", raw.backlog_share, d.backlog_share, 1, 100)?,
        step_up: range("step_up", raw.step_up, d.step_up, 1, 100)?,
        step_down: range("step_down", raw.step_down, d.step_down, 1, 100)?,
        max_reduction: range("max_reduction", raw.max_reduction, d.max_reduction, 1, 100)?,
        retry_after: range("retry_after", raw.retry_after, d.retry_after, 1, 3600)?,
        register_share: range(
            "register_share",
            raw.register_share,
            d.register_share,
            0,
            100,
        )?,
        oc_validity_ms: range(
            "oc_validity_ms",
            raw.oc_validity_ms,
            d.oc_validity_ms,
            1,
            86_400_000,
        )?,
        rate_limit,
        rate_burst: range(
            "rate_burst",
            raw.rate_burst,
            d.rate_burst.max(rate_limit),
            1,
            100_000_000,
        )?,
        rate_sources: range(
            "rate_sources",
            raw.rate_sources,
            d.rate_sources,
            16,
            10_000_000,
        )?,
    })
}
