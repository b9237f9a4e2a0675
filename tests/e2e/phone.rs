//! A minimal SIP user agent over UDP on 127.0.0.1 for the end-to-end tests: builds requests as
//! text, sends them, and reads answers with a timeout.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One UDP endpoint (one "device").
pub struct Phone {
    pub socket: UdpSocket,
    pub addr: SocketAddr,
    pub server: SocketAddr,
    cseq: u32,
    pub call_id: String,
}

/// A received SIP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub text: String,
}

impl Response {
    /// Values of every header named `name` (case-insensitive; no compact forms).
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
            })
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).first().copied()
    }

    /// Every Contact URI in the answer (one per binding; headers may hold comma lists).
    pub fn contacts(&self) -> Vec<String> {
        self.headers("Contact")
            .iter()
            .flat_map(|v| split_commas(v))
            .filter_map(|c| {
                let start = c.find('<')? + 1;
                let end = start + c[start..].find('>')?;
                Some(c[start..end].to_owned())
            })
            .collect()
    }

    /// The `expires` parameter of the Contact with URI `uri`.
    pub fn contact_expires(&self, uri: &str) -> Option<u64> {
        self.headers("Contact")
            .iter()
            .flat_map(|v| split_commas(v))
            .find(|c| c.contains(&format!("<{uri}>")))
            .and_then(|c| {
                c.split(';')
                    .find_map(|p| p.trim().strip_prefix("expires="))
                    .and_then(|v| v.trim().parse().ok())
            })
    }
}

/// Splits a header value at commas outside `<>` and quotes.
fn split_commas(v: &str) -> Vec<&str> {
    let (mut out, mut start, mut angle, mut quote) = (Vec::new(), 0, false, false);
    for (i, ch) in v.char_indices() {
        match ch {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !quote && !angle => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000
}

impl Phone {
    /// A new endpoint on an ephemeral 127.0.0.1 port, talking to `server`.
    pub fn new(server: SocketAddr) -> Phone {
        Phone::new_on("127.0.0.1", server)
    }

    /// A new endpoint on an ephemeral port of loopback address `ip` (another "host").
    pub fn new_on(ip: &str, server: SocketAddr) -> Phone {
        let socket = UdpSocket::bind((ip, 0)).expect("bind phone");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        Phone {
            socket,
            addr,
            server,
            cseq: 0,
            call_id: format!("e2e-{}@127.0.0.1", unique()),
        }
    }

    /// Sends raw bytes to the server.
    pub fn send(&self, text: &str) {
        self.socket.send_to(text.as_bytes(), self.server).unwrap();
    }

    /// Waits for the next final response (skipping 1xx); `None` on timeout.
    pub fn recv_final(&self) -> Option<Response> {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, _) = self.socket.recv_from(&mut buf).ok()?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let status = text.split(' ').nth(1)?.parse().ok()?;
            if status >= 200 {
                return Some(Response { status, text });
            }
        }
    }

    /// Sends `text` and waits for the final response, which must come.
    pub fn transact(&self, text: &str) -> Response {
        self.send(text);
        self.recv_final()
            .unwrap_or_else(|| panic!("no answer to:\n{text}"))
    }

    fn next_cseq(&mut self) -> u32 {
        self.cseq += 1;
        self.cseq
    }

    fn branch() -> String {
        format!("z9hG4bK-e2e-{}", unique())
    }

    /// An OPTIONS to the server itself.
    pub fn options(&mut self) -> String {
        let cseq = self.next_cseq();
        format!(
            "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:ping@{me}>;tag=p{cseq}\r\nTo: <sip:{server}>\r\n\
             Call-ID: {call}\r\nCSeq: {cseq} OPTIONS\r\nContent-Length: 0\r\n\r\n",
            server = self.server,
            me = self.addr,
            branch = Self::branch(),
            call = self.call_id,
        )
    }

    /// A REGISTER for `ext` with the given Contact header values (empty: a query) and headers.
    pub fn register(&mut self, ext: &str, contacts: &[String], extra: &str) -> String {
        let cseq = self.next_cseq();
        let contact_lines: String = contacts
            .iter()
            .map(|c| format!("Contact: {c}\r\n"))
            .collect();
        format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{ext}@{host}>;tag=r{cseq}\r\nTo: <sip:{ext}@{host}>\r\n\
             Call-ID: {call}\r\nCSeq: {cseq} REGISTER\r\n{contact_lines}\
             User-Agent: sipfork-e2e/1.0\r\n{extra}Content-Length: 0\r\n\r\n",
            server = self.server,
            host = self.server.ip(),
            me = self.addr,
            branch = Self::branch(),
            call = self.call_id,
        )
    }

    /// The Contact URI this phone registers as device `n` of `ext`.
    pub fn contact_uri(&self, ext: &str) -> String {
        format!("sip:{ext}@{}", self.addr)
    }
}
