use std::net::UdpSocket;
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::core::shard::owner_of;
use crate::core::steer::corpus::{datagrams, CONFIG};
use crate::core::steer::wire_owner;
use crate::engine::io::socket::bind_shard_sockets;

/// The program for `shards`, or `None` (with the reason printed) where the kernel does not let
/// this process load BPF at all; any other refusal (the verifier) fails the test.
fn load(shards: u16, params: &WireParams) -> Option<Program> {
    match Program::load(shards, params) {
        Ok(p) => Some(p),
        Err(why) if why.0.contains("Operation not permitted") => {
            eprintln!("skipping: {why}");
            None
        }
        Err(why) => panic!("{why}"),
    }
}

#[test]
fn the_loaded_program_decides_as_the_model_on_every_datagram() {
    let params = WireParams::of(&Config::from_toml(CONFIG).unwrap());
    for shards in [2u16, 3, 4] {
        let Some(prog) = load(shards, &params) else {
            return;
        };
        let mut chosen = 0;
        for (label, d) in datagrams(shards) {
            let model = wire_owner(&d, shards, &params).map(|s| s.0);
            let kernel = prog
                .test_run(&d)
                .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN {label} ({} bytes): {e}", d.len()));
            assert_eq!(
                kernel,
                model,
                "{shards} shards, {label}: {:?}",
                String::from_utf8_lossy(&d)
            );
            chosen += usize::from(model.is_some());
        }
        assert!(chosen > 40, "{shards} shards: {chosen} choices");
        eprintln!("{shards} shards: {} instructions", prog.len);
    }
}

#[test]
fn without_dids_the_did_steers_by_its_own_hash() {
    let Some(prog) = load(4, &WireParams::default()) else {
        return;
    };
    let (_, d) = datagrams(4)
        .into_iter()
        .find(|(l, _)| l == "INVITE DID")
        .unwrap();
    assert_eq!(
        prog.test_run(&d).unwrap(),
        Some(owner_of(b"+31201234007", 4).0)
    );
}

#[test]
fn attached_it_delivers_each_datagram_to_its_owners_socket() {
    let shards = 2u16;
    let sockets = bind_shard_sockets(&["127.0.0.1:0".parse().unwrap()], 2, 1 << 16).unwrap();
    let Some(prog) = load(shards, &WireParams::default()) else {
        return;
    };
    prog.attach(&sockets[0][0]).expect("attach");
    let to = sockets[0][0].local_addr().unwrap();
    for s in &sockets {
        s[0].set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let mut seen = [0u32; 2];
    // Many source ports (the kernel's hash would spread them) and many users.
    for ext in 1000..1040u32 {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let d = format!(
            "INVITE sip:{ext}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKa\r\n\
             To: <sip:{ext}@example.com>\r\nContent-Length: 0\r\n\r\n"
        );
        sender.send_to(d.as_bytes(), to).unwrap();
        let owner = owner_of(ext.to_string().as_bytes(), shards);
        let mut buf = [0u8; 2048];
        let (n, _) = sockets[owner.index()][0]
            .recv_from(&mut buf)
            .expect("on the owner's socket");
        assert_eq!(&buf[..n], d.as_bytes());
        seen[owner.index()] += 1;
    }
    assert!(seen.iter().all(|&c| c > 5), "{seen:?}");
    // Junk still arrives somewhere (the kernel's hash).
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"junk junk junk junk", to).unwrap();
    for s in &sockets {
        s[0].set_nonblocking(true).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 64];
    'wait: loop {
        for s in &sockets {
            if s[0].recv_from(&mut buf).is_ok() {
                break 'wait;
            }
        }
        assert!(std::time::Instant::now() < deadline, "junk lost");
        std::thread::sleep(Duration::from_millis(5));
    }
}
