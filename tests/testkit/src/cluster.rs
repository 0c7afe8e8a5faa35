//! Several `pttbridge` nodes sharing one PTT account (`[cluster]`): which node has it connected
//! (each node's `/healthz`) and whether murmurd lists it in the channel (a pymumble terminal
//! there), checked together so that two owners at once fail the test.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bridge::Bridge;
use crate::terminal::Terminal;

/// The first account of the first PTT server in a node's `/healthz`.
pub fn account(h: &Value) -> &Value {
    &h["sides"]["ptt"]["servers"][0]["accounts"][0]
}

/// The running nodes (by index) whose account is connected now.
pub fn connected(bridges: &[Option<Bridge>]) -> Vec<usize> {
    bridges
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.as_ref().map(|b| (i, b.health())))
        .filter(|(_, h)| account(h)["state"] == "connected")
        .map(|(i, _)| i)
        .collect()
}

/// How many sessions named "bridge" the terminal sees in its channel.
pub fn bridges_in_channel(watcher: &mut Terminal) -> usize {
    watcher.users().iter().filter(|u| *u == "bridge").count()
}

/// Samples until exactly one node is connected and its account is in the watcher's channel,
/// asserting at every sample that never two are; returns that node. Panics with the nodes'
/// logs after `limit`.
pub fn wait_single_owner(
    bridges: &[Option<Bridge>],
    watcher: &mut Terminal,
    limit: Duration,
) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let now = connected(bridges);
        let seen = bridges_in_channel(watcher);
        assert!(now.len() <= 1, "two nodes connected at once: {now:?}");
        assert!(seen <= 1, "the account is in the channel twice");
        if now.len() == 1 && seen == 1 {
            return now[0];
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = bridges.iter().flatten().map(|b| b.logs_tail(25)).collect();
            panic!(
                "no node holds the account after {limit:?}: connected {now:?}, in the channel {seen}\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
