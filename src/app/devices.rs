//! The extension overview: what `GET /extensions/{number}/devices` answers and what
//! `sipfork devices EXT` prints. One JSON shape, serialized by the admin listener and read back
//! by the CLI.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// One registered device of an extension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The Contact URI the device registered.
    pub contact: String,
    /// Source IP and port of its REGISTER.
    pub source: String,
    /// Transport of its REGISTER (`UDP`).
    pub transport: String,
    /// Its User-Agent header (empty when it sent none).
    pub user_agent: String,
    /// The q-value it asked for, if any (0.0 to 1.0).
    pub q: Option<f64>,
    /// Wall-clock expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Seconds left when the overview was taken.
    pub expires_in: u64,
    /// Its `+sip.instance` (RFC 5626), if any.
    pub instance: Option<String>,
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
        ];
        let rows: Vec<[String; 8]> = self
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
                    d.q.map_or("-".into(), |q| format!("{q:.3}")),
                    format!("{} s", d.expires_in),
                    utc(d.expires_at),
                    d.instance.clone().unwrap_or_else(|| "-".into()),
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
                    transport: "UDP".into(),
                    user_agent: "phone/1.0".into(),
                    q: Some(0.5),
                    expires_at: 0,
                    expires_in: 3599,
                    instance: Some("<urn:uuid:00000000-0000-0000-0000-000000000001>".into()),
                },
                DeviceView {
                    contact: "sip:1000@127.0.0.1:5072".into(),
                    source: "127.0.0.1:5072".into(),
                    transport: "UDP".into(),
                    user_agent: String::new(),
                    q: None,
                    expires_at: 0,
                    expires_in: 7,
                    instance: None,
                },
            ],
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "extension 1000: 2 devices");
        assert!(lines[1].starts_with("CONTACT                  SOURCE"));
        assert!(lines[2].contains("phone/1.0") && lines[2].contains("0.500"));
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
