//! The TCP/TLS stream framer (`sipfork::core::transport::framer`): byte 0 picks the limits,
//! then `(cut: u8)` bytes choose where the rest is split into reads (`cut` octets each, 0 = the
//! remainder at once), and every byte after the first zero cut is the stream. Nothing may
//! panic; the frames and the error are the same however the stream was split (one push of the
//! whole stream is the reference); every message ends its header block with an empty line,
//! holds exactly its Content-Length of body and stays within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipfork::core::transport::framer::{Frame, FrameError, Framer, Limits};
use sipfork::time::Instant;

#[derive(Debug, PartialEq)]
enum Out {
    Msg(Vec<u8>),
    Ping,
}

fn run(limits: Limits, reads: &[&[u8]]) -> (Vec<Out>, Option<FrameError>) {
    let mut f = Framer::new(limits);
    let now = Instant::ZERO;
    let mut out = Vec::new();
    for r in reads {
        f.push(r);
        assert!(f.buffered() <= limits.max_header + limits.max_body + r.len() + 4);
        loop {
            match f.next_frame(now) {
                Ok(Some(Frame::Message(m))) => out.push(Out::Msg(m.to_vec())),
                Ok(Some(Frame::Ping)) => out.push(Out::Ping),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(f.next_frame(now), Err(e));
                    return (out, Some(e));
                }
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_header: 32 + usize::from(pick & 0x0f) * 64,
        max_body: usize::from(pick >> 4) * 32,
        max_per_second: u32::MAX,
    };
    let zero = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (cuts, stream) = (&rest[..zero], rest.get(zero + 1..).unwrap_or(&[]));
    let mut reads = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let end = (at + usize::from(c)).min(stream.len());
        reads.push(&stream[at..end]);
        at = end;
    }
    reads.push(&stream[at..]);

    let whole = run(limits, &[stream]);
    let split = run(limits, &reads);
    assert_eq!(whole, split);
    for o in &whole.0 {
        if let Out::Msg(m) = o {
            let end = m.windows(4).position(|w| w == b"\r\n\r\n").expect("empty line") + 4;
            assert!(end <= limits.max_header);
            assert!(m.len() - end <= limits.max_body);
        }
    }
});
