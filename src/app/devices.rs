//! The extension overview: what `GET /extensions/{number}/devices` answers and what
//! `sipfork devices EXT` prints. One JSON shape, serialized by the admin listener and read back
//! by the CLI.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::core::registrar::Device;
use crate::core::Core;
use crate::time::Instant;

/// One registered device of an extension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The Contact URI the device registered.
    pub contact: String,
    /// Source IP and port of its REGISTER.
    pub source: String,
    /// Where calls to it go (the source instead of the Contact behind NAT, per `nat`).
    pub destination: String,
    /// Transport of its REGISTER (`UDP`).
    pub transport: String,
    /// Its User-Agent header (empty when it sent none).
    pub user_agent: String,
    /// Its q-value (0.0 to 1.0; 1.0 when it gave none).
    pub q: f64,
    /// Wall-clock expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Seconds left when the overview was taken.
    pub expires_in: u64,
    /// Its last registration, seconds since the Unix epoch.
    pub registered_at: u64,
    /// Its `+sip.instance` (RFC 5626), if any.
    pub instance: Option<String>,
    /// Its device class (`[[device_classes]]`; `ip_phone` when none matched).
    pub class: String,
    /// The Call-ID of the answered call the device is in, if any (`docs/features.md`).
    #[serde(default)]
    pub in_call: Option<String>,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        Self {
            contact: d.contact,
            source: d.source.to_string(),
            destination: d.destination.to_string(),
            transport: d.transport.to_owned(),
            user_agent: d.user_agent.unwrap_or_default(),
            q: f64::from(d.q) / 1000.0,
            expires_at: d.expires_at_unix,
            expires_in: d.expires_in,
            registered_at: d.registered_at_unix,
            instance: d.instance,
            class: d.class,
            in_call: None,
        }
    }
}

/// An extension and its devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// The extension number.
    pub extension: String,
    /// Its devices, as the registrar orders them.
    pub devices: Vec<DeviceView>,
}

impl DeviceReport {
    /// The overview of `number` from the shard that owns it; `None` when the number is not an
    /// extension served here.
    pub fn from_core(core: &Core, now: Instant, number: &str) -> Option<Self> {
        let devices = core.devices(now, number.as_bytes())?;
        let calls = core.devices_in_call(number.as_bytes());
        let devices = devices
            .into_iter()
            .map(|d| {
                let call = calls
                    .iter()
                    .find(|(flow, _)| *flow == d.destination || *flow == d.source)
                    .map(|(_, id)| String::from_utf8_lossy(id).into_owned());
                DeviceView {
                    in_call: call,
                    ..DeviceView::from(d)
                }
            })
            .collect();
        Some(Self {
            extension: number.to_owned(),
            devices,
        })
    }

    /// A readable table (what `sipfork devices EXT` prints).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let n = self.devices.len();
        let _ = writeln!(
            out,
            "extension {}: {n} device{}",
            self.extension,
            if n == 1 { "" } else { "s" }
        );
        if n == 0 {
            return out;
        }
        let header = [
            "CONTACT",
            "SOURCE",
            "TRANSPORT",
            "USER-AGENT",
            "Q",
            "EXPIRES IN",
            "EXPIRES AT (UTC)",
            "INSTANCE",
            "IN CALL",
        ];
        let rows: Vec<[String; 9]> = self
            .devices
            .iter()
            .map(|d| {
                [
                    d.contact.clone(),
                    d.source.clone(),
                    d.transport.clone(),
                    if d.user_agent.is_empty() {
                        "-".into()
                    } else {
                        d.user_agent.clone()
                    },
                    format!("{:.3}", d.q),
                    format!("{} s", d.expires_in),
                    utc(d.expires_at),
                    d.instance.clone().unwrap_or_else(|| "-".into()),
                    d.in_call.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut line = |cells: &[&str]| {
            let mut l = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(cell);
                } else {
                    let _ = write!(l, "{cell:<w$}  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&header);
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(&cells);
        }
        out
    }
}

/// `YYYY-MM-DD hh:mm:ss` of Unix seconds (UTC), from the civil-from-days algorithm.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_798_761_599), "2026-12-31 23:59:59");
    }

    #[test]
    fn table_aligns_columns_and_marks_missing_values() {
        let report = DeviceReport {
            extension: "1000".into(),
            devices: vec![
                DeviceView {
                    contact: "sip:1000@127.0.0.1:5071".into(),
                    source: "127.0.0.1:5071".into(),
                    destination: "127.0.0.1:5071".into(),
                    transport: "UDP".into(),
                    user_agent: "phone/1.0".into(),
                    q: 0.5,
                    expires_at: 0,
                    expires_in: 3599,
                    registered_at: 0,
                    instance: Some("<urn:uuid:00000000-0000-0000-0000-000000000001>".into()),
                    class: "mobile".into(),
                    in_call: Some("call-1@example.com".into()),
                },
                DeviceView {
                    contact: "sip:1000@127.0.0.1:5072".into(),
                    source: "127.0.0.1:5072".into(),
                    destination: "127.0.0.1:5072".into(),
                    transport: "UDP".into(),
                    user_agent: String::new(),
                    q: 1.0,
                    expires_at: 0,
                    expires_in: 7,
                    registered_at: 0,
                    instance: None,
                    class: "ip_phone".into(),
                    in_call: None,
                },
            ],
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "extension 1000: 2 devices");
        assert!(lines[1].starts_with("CONTACT                  SOURCE"));
        assert!(lines[2].contains("phone/1.0") && lines[2].contains("0.500"));
        assert!(lines[1].ends_with("IN CALL") && lines[2].ends_with("call-1@example.com"));
        assert!(
            lines[3].contains("  -  ") && lines[3].ends_with(" -"),
            "{table}"
        );
        let col = lines[1].find("SOURCE").unwrap();
        assert_eq!(&lines[2][col..col + 14], "127.0.0.1:5071");
        let empty = DeviceReport {
            extension: "1001".into(),
            devices: vec![],
        };
        assert_eq!(empty.table(), "extension 1001: 0 devices\n");
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<DeviceReport>(&json).unwrap(), report);
    }
}
