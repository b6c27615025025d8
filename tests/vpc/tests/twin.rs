//! The VPC twin's tests. They need root (network namespaces, nftables); without it they fail
//! with the reason — `tests/run` leaves them out for non-root users with
//! `-E 'not binary_id(vpc-twin::twin)'` and says so.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write as _;
use std::process::{Command, Stdio};

use vpc_twin::{firewall, program};

/// Every ruleset the twin would load passes `nft -c` (check mode: parsed and validated by the
/// kernel, nothing committed).
#[test]
fn compiled_rulesets_pass_nft_check_mode() {
    vpc_twin::require_root().unwrap();
    let topology = program::load().unwrap();
    let members = firewall::Members::new();
    let mut rulesets = vec![
        ("vpc router".to_owned(), firewall::vpc_router()),
        ("nat".to_owned(), firewall::nat_gateway(&topology)),
    ];
    for host in topology.hosts.iter().filter(|host| !host.groups.is_empty()) {
        rulesets.push((
            host.name.clone(),
            firewall::security_groups(&topology, host, &members),
        ));
    }
    for (name, text) in rulesets {
        let mut child = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running nft (apt-get install -y nftables)");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "nft -c rejected the ruleset of {name}:\n{}\n{text}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
