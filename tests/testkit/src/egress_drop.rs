//! RTP to some loopback ports dropped at loopback's egress (load tools' `--remote`): an
//! nftables rule on `lo`'s egress hook drops RTP (not RTCP, STUN or DTLS) sent to those ports,
//! after the sender's whole UDP/IP stack has run and before loopback delivers it. Their
//! receivers still connect, answer ICE consent and get RTCP; they just hear nothing.
//!
//! Why: on loopback the sender's `sendmmsg` also runs the receiving socket's side (IP and UDP
//! receive, the queueing, the wake-up of the reader), which across a network is the receiving
//! machine's work. With 1,000 listeners on the same two cores that delivery is about half of
//! what a datagram costs the sender (BENCHMARKS.md, "Listeners on other machines"). Dropping at
//! egress leaves the sender paying what it would pay with a network card, less the card's
//! driver: what a server with its listeners across a network pays.
//!
//! Needs root and `nft` (`apt-get install nftables`); the table is removed when this ends.

use std::io::Write;
use std::process::{Command, Stdio};

/// The nftables table this tool owns (a stale one from a killed run is replaced).
const TABLE: &str = "pttbridge_load_remote";

/// The installed drop rule; removed again on drop.
pub struct EgressDrop;

fn nft(script: &str) -> std::io::Result<std::process::Output> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())?;
    child.wait_with_output()
}

impl EgressDrop {
    /// Drops RTP (not RTCP, STUN or DTLS) sent over loopback to any of `ports`.
    pub fn install(ports: &[u16]) -> EgressDrop {
        let _ = nft(&format!("delete table netdev {TABLE}\n"));
        let elements: Vec<String> = ports.iter().map(u16::to_string).collect();
        // RTP and RTCP have version 2 in the payload's first two bits (STUN and DTLS have 0);
        // RTCP's second byte is its packet type 200-206, RTP's is marker + payload type.
        let script = format!(
            "table netdev {TABLE} {{\n\
               set remote {{ type inet_service; elements = {{ {} }} }}\n\
               chain egress {{\n\
                 type filter hook egress device \"lo\" priority 0;\n\
                 udp dport @remote @th,64,2 2 @th,72,8 != 200-206 counter drop\n\
               }}\n\
             }}\n",
            elements.join(", ")
        );
        match nft(&script) {
            Ok(out) if out.status.success() => EgressDrop,
            Ok(out) => panic!(
                "--remote: nft refused the drop rule (run as root): {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("--remote needs nft: apt-get install nftables ({e})"),
        }
    }

    /// The packets the rule has dropped so far.
    pub fn dropped(&self) -> u64 {
        let out = Command::new("nft")
            .args(["list", "table", "netdev", TABLE])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for EgressDrop {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table netdev {TABLE}\n"));
    }
}
