//! Trunk keep-alives over TLS (issue 16, `docs/trunk-keepalive.md`): the binary, with two
//! shards, each backend, `[policy] trunk_keepalive` and trunk 3000 at two TLS addresses: the
//! first refuses connections, the second is a test-side rustls server (certificate with the
//! 127.0.0.1 IP SAN, named by `[tls] peer_ca`). The probes to the first fail to connect and mark
//! it dead at once (no Timer F), the second gets `OPTIONS` over a TLS connection sipfork opens
//! (TLS Via), answers them and is alive; a call to the trunk then goes to the second address over
//! a connection that carried probes, and nothing is ever sent over UDP to either address.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{free_port, Appliance, Io, Scratch, Setup};
use crate::tcp::{answer, final_over_udp, invite, take_message};
use crate::tls::write_certificate;

/// What the PBX's connections carried: (connection number, message), in order.
type Seen = Arc<Mutex<Vec<(usize, String)>>>;

/// A TLS PBX at a fresh port: answers `OPTIONS` 200 and `INVITE` 486 on every connection
/// sipfork opens, until `stop`.
struct Pbx {
    addr: SocketAddr,
    pem: String,
    seen: Seen,
    stop: Arc<AtomicBool>,
}

impl Pbx {
    fn start() -> Pbx {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listener = TcpListener::bind(addr).expect("PBX TCP port");
        listener.set_nonblocking(true).unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_pair.serialize_der().into());
        let server = Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![c.cert.der().clone()], key)
                .unwrap(),
        );
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        sock.set_nonblocking(false).unwrap();
                        let session = rustls::ServerConnection::new(Arc::clone(&server)).unwrap();
                        let tls = rustls::StreamOwned::new(session, sock);
                        let seen = Arc::clone(&seen2);
                        std::thread::spawn(move || serve(n, tls, seen));
                        n += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Pbx {
            addr,
            pem: c.cert.pem(),
            seen,
            stop,
        }
    }

    fn seen(&self) -> Vec<(usize, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves connection `n` until it closes: each message framed by Content-Length is recorded and
/// answered.
fn serve(n: usize, mut tls: impl Read + Write, seen: Seen) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        while let Some(msg) = take_message(&mut pending) {
            let reply = if msg.starts_with("OPTIONS ") {
                Some(answer(&msg, "200 OK"))
            } else if msg.starts_with("INVITE ") {
                Some(answer(&msg, "486 Busy Here"))
            } else {
                None
            };
            seen.lock().unwrap().push((n, msg));
            if let Some(r) = reply {
                if tls
                    .write_all(r.as_bytes())
                    .and_then(|_| tls.flush())
                    .is_err()
                {
                    return;
                }
            }
        }
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(k) => pending.extend_from_slice(&buf[..k]),
        }
    }
}

/// Waits (bounded) until `done` holds.
fn wait(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn tls_trunk_addresses_are_probed_over_tls_and_a_refused_one_is_skipped_at_once() {
    for io in Io::BOTH {
        let dir = Scratch::new(&format!("trunk-ka-{}", io.metric_name()));
        write_certificate(&dir.0);
        let pbx = Pbx::start();
        std::fs::write(dir.0.join("peer.pem"), &pbx.pem).unwrap();
        // The first address: nothing listens on TCP there, a UDP socket watches for datagrams.
        let refused: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let watch_refused = UdpSocket::bind(refused).unwrap();
        let watch_pbx = UdpSocket::bind(pbx.addr).unwrap();
        let mut setup = Setup {
            shards: 2,
            persist: false,
            tls: true,
            ..Setup::new(io)
        };
        // The harness writes these right after its [tls] cert and key.
        setup.extensions = format!(
            "peer_ca = \"peer.pem\"\n\n[policy]\ntrunk_keepalive = 30\n\n{}\n\
             [[extensions]]\nnumbers = \"3000\"\n\
             trunk = [\"sip:{refused};transport=tls\", \"sip:{};transport=tls\"]\n",
            setup.extensions, pbx.addr
        );
        setup.auth = "none";
        let Some(app) = Appliance::start(&dir.0, setup) else {
            continue;
        };
        let started = Instant::now();
        // Both shards: the refused address dead at once, the PBX's probes answered over TLS.
        let settled = wait(Duration::from_secs(5), || {
            app.metric_sum("sipfork_trunk_addresses_dead") == 2
                && app.metric_sum("sipfork_trunk_probes_answered_total") == 2
        });
        assert!(
            settled,
            "{io:?}: dead {}, answered {}\n{}",
            app.metric_sum("sipfork_trunk_addresses_dead"),
            app.metric_sum("sipfork_trunk_probes_answered_total"),
            app.log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no Timer F wait"
        );
        assert!(app.metric_sum("sipfork_trunk_probe_connect_failures_total") >= 1);
        assert_eq!(app.metric_sum("sipfork_trunk_probes_total"), 4);
        let probes: Vec<(usize, String)> = pbx
            .seen()
            .into_iter()
            .filter(|(_, m)| m.starts_with("OPTIONS "))
            .collect();
        assert_eq!(probes.len(), 2, "{probes:?}");
        for (_, p) in &probes {
            let line = format!("OPTIONS sip:{};transport=tls SIP/2.0\r\n", pbx.addr);
            assert!(p.starts_with(&line), "{p}");
            let via = format!("Via: SIP/2.0/TLS {};branch=", app.tls);
            assert!(p.contains(&via), "{p}");
        }
        assert!(app.log().contains(&format!(
            "trunk address {refused} down: tls connection failed"
        )));

        // A call to the trunk: the PBX, over a connection its probes took.
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let caller = udp.local_addr().unwrap();
        udp.send_to(
            invite("UDP", caller, app.sip, 3000, 1, 0).as_bytes(),
            app.sip,
        )
        .unwrap();
        let fin = final_over_udp(&udp);
        assert!(fin.starts_with("SIP/2.0 486"), "{io:?}: {fin}");
        let seen = pbx.seen();
        let (conn, inv) = seen
            .iter()
            .find(|(_, m)| m.starts_with("INVITE "))
            .expect("the INVITE");
        assert!(inv.contains("Via: SIP/2.0/TLS "), "{inv}");
        assert!(probes.iter().any(|(c, _)| c == conn), "{seen:?}");

        // Never over UDP to either trunk address.
        for s in [&watch_refused, &watch_pbx] {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 2048];
            assert!(s.recv(&mut buf).is_err(), "a datagram to a TLS trunk");
        }
    }
}
