//! The topology's filtering and address translation as nftables rulesets, one per namespace:
//! security groups on each host's VPC interface, the internet gateway in the VPC router (1:1
//! NAT of public IPv4 addresses), the NAT gateway's masquerade, App Runner's public endpoint,
//! and the listener of Express Mode's load balancer.
//!
//! Each ruleset replaces the twin's own table atomically (`table …; delete table …; table … {}`
//! in one `nft -f`), so it can be reapplied when a security group's members change.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::reach::{METADATA_EXCEPTION, RESOLVER_EXCEPTION};
use crate::topology::{Host, HostKind, LISTENER_PORT, METADATA_ADDRESSES, Peer, Protocol, Rule, Topology};

/// The host's VPC interface (its ENI) inside its namespace.
pub const ENI: &str = "eni0";
/// The App Runner namespace's interface towards its public endpoint.
pub const PUBLIC_ENDPOINT_IF: &str = "pub0";
/// The VPC router's interface towards the internet gateway.
pub const IGW_IF: &str = "igw0";

/// Table names (each in a namespace of the twin only).
pub const SG_TABLE: &str = "avt_sg";
pub const VPC_TABLE: &str = "avt_vpc";
pub const NAT_TABLE: &str = "avt_nat";
pub const LOAD_BALANCER_TABLE: &str = "avt_alb";

/// Addresses of the running ENIs that carry each security group (what a group reference means).
pub type Members = BTreeMap<String, Vec<Ipv4Addr>>;

fn set_name(group: &str) -> String {
    format!("sg_{}", group.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
}

/// An nft comment: quotes removed, at most 128 bytes.
fn comment(text: &str) -> String {
    let mut text: String = text.chars().filter(|c| *c != '"' && *c != '\\').collect();
    while text.len() > 127 {
        text.pop();
    }
    format!("comment \"{text}\"")
}

fn replace_table(family: &str, name: &str, body: &str) -> String {
    format!("table {family} {name}\ndelete table {family} {name}\ntable {family} {name} {{\n{body}}}\n")
}

fn match_rule(rule: &Rule, direction_peer: &str) -> String {
    let mut out = String::new();
    match &rule.peer {
        Peer::Cidr(cidr) => {
            let _ = write!(out, "ip {direction_peer} {cidr} ");
        }
        Peer::Group(group) => {
            let _ = write!(out, "ip {direction_peer} @{} ", set_name(group));
        }
    }
    let protocol = match rule.protocol {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::All => None,
    };
    match (protocol, rule.ports) {
        (Some(protocol), Some((from, to))) if from == to => {
            let _ = write!(out, "{protocol} dport {from} ");
        }
        (Some(protocol), Some((from, to))) => {
            let _ = write!(out, "{protocol} dport {from}-{to} ");
        }
        (Some(protocol), None) => {
            let _ = write!(out, "meta l4proto {protocol} ");
        }
        (None, _) => {}
    }
    out
}

/// The security groups of `host` on its ENI: stateful, default deny, AWS's exceptions first.
pub fn security_groups(topology: &Topology, host: &Host, members: &Members) -> String {
    let resolver = topology.vpc.resolver();
    let mut body = String::new();
    let mut referenced: Vec<&str> = Vec::new();
    for group in &host.groups {
        for rule in topology.groups[group]
            .ingress
            .iter()
            .chain(&topology.groups[group].egress)
        {
            if let Peer::Group(peer) = &rule.peer
                && !referenced.contains(&peer.as_str())
            {
                referenced.push(peer);
            }
        }
    }
    for group in referenced {
        let addresses = members.get(group).cloned().unwrap_or_default();
        let _ = write!(body, "  set {} {{\n    type ipv4_addr\n", set_name(group));
        if !addresses.is_empty() {
            let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            let _ = writeln!(body, "    elements = {{ {} }}", list.join(", "));
        }
        let _ = writeln!(body, "  }}");
    }

    // App Runner's public endpoint is not an ENI: it forwards the service port, nothing else.
    let public_endpoint = if host.kind == HostKind::AppRunner {
        vec![
            format!(
                "iifname \"{PUBLIC_ENDPOINT_IF}\" tcp dport {} accept {}",
                topology.service_port,
                comment("App Runner public endpoint: the service port only")
            ),
            format!("iifname \"{PUBLIC_ENDPOINT_IF}\" ct state established,related accept"),
            format!(
                "iifname \"{PUBLIC_ENDPOINT_IF}\" drop {}",
                comment("App Runner public endpoint: nothing else")
            ),
        ]
    } else {
        Vec::new()
    };
    let metadata: Vec<String> = METADATA_ADDRESSES.iter().map(ToString::to_string).collect();
    let egress_exceptions = [
        format!(
            "ip daddr {resolver} udp dport 53 accept {}",
            comment(RESOLVER_EXCEPTION)
        ),
        format!(
            "ip daddr {resolver} tcp dport 53 accept {}",
            comment(RESOLVER_EXCEPTION)
        ),
        format!(
            "ip daddr {{ {} }} accept {}",
            metadata.join(", "),
            comment(METADATA_EXCEPTION)
        ),
    ];
    let ingress_exceptions = [format!(
        "ip saddr {resolver} udp sport 53 accept {}",
        comment(RESOLVER_EXCEPTION)
    )];
    write_chain(
        &mut body,
        topology,
        host,
        Direction::Ingress,
        &public_endpoint,
        &ingress_exceptions,
    );
    write_chain(
        &mut body,
        topology,
        host,
        Direction::Egress,
        &[],
        &egress_exceptions,
    );
    replace_table("inet", SG_TABLE, &body)
}

#[derive(Clone, Copy)]
enum Direction {
    Ingress,
    Egress,
}

/// One direction of a host's security groups, as a regular chain (`ingress` or `egress`) that
/// base chains jump to: `before` (what is not an ENI), then only the ENI is filtered: replies
/// (stateful), AWS's `exceptions`, one accept per rule of every group the host carries (their
/// rules add up), default drop.
///
/// Ingress is judged at prerouting, before any address translation in the namespace (the load
/// balancer's listener rewrites the destination: its group must see the listener port the
/// client asked for). Egress is judged on what the host sends itself (output) and on what it
/// forwards (the listener's connections to its targets, after translation, as an ALB node
/// opens them).
fn write_chain(
    body: &mut String,
    topology: &Topology,
    host: &Host,
    direction: Direction,
    before: &[String],
    exceptions: &[String],
) {
    let (chain, hooks, interface, peer): (&str, &[(&str, &str)], &str, &str) = match direction {
        Direction::Ingress => (
            "ingress",
            &[("ingress_hook", "prerouting priority mangle")],
            "iifname",
            "saddr",
        ),
        Direction::Egress => (
            "egress",
            &[
                ("egress_hook", "output priority filter"),
                ("forward_hook", "forward priority filter"),
            ],
            "oifname",
            "daddr",
        ),
    };
    let _ = writeln!(body, "  chain {chain} {{");
    let fixed = [
        format!(
            "{interface} != \"{ENI}\" accept {}",
            comment("only the ENI carries security groups")
        ),
        // Not `related`: an ICMP error about an admitted flow (fragmentation needed, unreachable)
        // passes a security group only if a rule admits ICMP — the EC2 guide's Path MTU Discovery
        // asks for such an inbound rule — and the programs declare none.
        format!(
            "ct state established accept {}",
            comment("security groups are stateful")
        ),
    ];
    for line in before.iter().chain(&fixed).chain(exceptions) {
        let _ = writeln!(body, "    {line}");
    }
    for group in &host.groups {
        let rules = match direction {
            // The connector's ENIs carry App Runner's outgoing traffic only.
            Direction::Ingress if host.kind == HostKind::AppRunner => continue,
            Direction::Ingress => &topology.groups[group].ingress,
            Direction::Egress => &topology.groups[group].egress,
        };
        for rule in rules {
            let _ = writeln!(
                body,
                "    {}accept {}",
                match_rule(rule, peer),
                comment(&format!("{} ({group}): {}", rule.name, rule.description))
            );
        }
    }
    let _ = writeln!(
        body,
        "    counter drop {}",
        comment(&format!(
            "default deny: no {chain} rule of {} matched",
            host.groups.join(", ")
        ))
    );
    let _ = writeln!(body, "  }}");
    for (base, hook) in hooks {
        let _ = writeln!(
            body,
            "  chain {base} {{\n    type filter hook {hook}; policy accept;\n    jump {chain}\n  }}"
        );
    }
}

/// The VPC router's internet gateway. It translates each public IPv4 address 1:1 to its VPC
/// address both ways (as AWS's internet gateway does for an ENI's public IP), and the NAT
/// gateways' addresses to their Elastic IP (the gateway's address on the internet side).
/// From the internet only replies and traffic to a public address enter (the ENI's security
/// groups then decide); to the internet only sources with a public address or a NAT gateway
/// leave: anything else has no address the internet could answer.
pub fn vpc_router(topology: &Topology) -> String {
    let public: Vec<&Host> = topology
        .hosts
        .iter()
        .filter(|host| host.public_ip.is_some())
        .collect();
    let nat: Vec<String> = topology
        .hosts
        .iter()
        .filter(|host| host.kind == HostKind::Nat)
        .map(|host| host.address.to_string())
        .collect();
    let may_leave: Vec<String> = public
        .iter()
        .map(|host| host.address.to_string())
        .chain(nat.iter().cloned())
        .collect();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;"
    );
    let _ = writeln!(
        body,
        "    ct state established,related accept {}",
        comment("internet gateway: replies")
    );
    let _ = writeln!(
        body,
        "    iifname \"{IGW_IF}\" ct status dnat accept {}",
        comment("internet gateway: to a public IPv4 address; the ENI's security groups decide")
    );
    let _ = writeln!(
        body,
        "    iifname \"{IGW_IF}\" counter drop {}",
        comment(
            "internet gateway: no other VPC address is public (the NAT gateway's EIP admits only replies)"
        )
    );
    let unaddressed = if may_leave.is_empty() {
        format!("    oifname \"{IGW_IF}\" counter drop")
    } else {
        format!(
            "    oifname \"{IGW_IF}\" ip saddr != {{ {} }} counter drop",
            may_leave.join(", ")
        )
    };
    let _ = writeln!(
        body,
        "{unaddressed} {}",
        comment(
            "internet gateway: a source without a public IPv4 address (and not a NAT gateway) goes nowhere"
        )
    );
    let _ = writeln!(body, "  }}");
    let _ = writeln!(
        body,
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;"
    );
    for host in &public {
        if let Some(public_ip) = host.public_ip {
            let _ = writeln!(
                body,
                "    iifname \"{IGW_IF}\" ip daddr {public_ip} dnat to {} {}",
                host.address,
                comment(&format!("internet gateway: public IPv4 of {}", host.name))
            );
        }
    }
    let _ = writeln!(body, "  }}");
    let _ = writeln!(
        body,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;"
    );
    for host in &public {
        if let Some(public_ip) = host.public_ip {
            let _ = writeln!(
                body,
                "    oifname \"{IGW_IF}\" ip saddr {} snat to {public_ip} {}",
                host.address,
                comment(&format!(
                    "internet gateway: {} leaves as its public IPv4",
                    host.name
                ))
            );
        }
    }
    if !nat.is_empty() {
        let _ = writeln!(
            body,
            "    oifname \"{IGW_IF}\" ip saddr {{ {} }} masquerade {}",
            nat.join(", "),
            comment("internet gateway: the NAT gateway's private address to its Elastic IP")
        );
    }
    let _ = writeln!(body, "  }}");
    replace_table("ip", VPC_TABLE, &body)
}

/// A node of Express Mode's Application Load Balancer: its listener takes TCP
/// [`LISTENER_PORT`] and opens a connection to the frontend task's container port from the
/// node's own VPC address (as an ALB node connects to its targets from its private IP). Only
/// the connection is modelled: no TLS termination, no HTTP routing (plain HTTP passes through).
/// Anything else sent to the node finds no listener and gets no answer.
pub fn load_balancer(topology: &Topology, node: &Host) -> String {
    let target = topology.frontend();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;"
    );
    let _ = writeln!(
        body,
        "    iifname \"{ENI}\" ip daddr {} tcp dport {LISTENER_PORT} dnat to {}:{} {}",
        node.address,
        target.address,
        topology.service_port,
        comment(&format!(
            "listener {LISTENER_PORT} → target group: {} on the container port (no TLS, no HTTP routing)",
            target.name
        ))
    );
    let _ = writeln!(body, "  }}");
    let _ = writeln!(
        body,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        body,
        "    oifname \"{ENI}\" ct status dnat snat to {} {}",
        node.address,
        comment("the node connects to its targets from its own VPC address")
    );
    let _ = writeln!(body, "  }}");
    let _ = writeln!(
        body,
        "  chain input {{\n    type filter hook input priority filter; policy accept;"
    );
    let _ = writeln!(
        body,
        "    iifname \"{ENI}\" ct state new counter drop {}",
        comment("no listener on this port: no answer")
    );
    let _ = writeln!(body, "  }}");
    replace_table("ip", LOAD_BALANCER_TABLE, &body)
}

/// A NAT gateway: traffic from the VPC to anywhere else leaves with the gateway's address.
pub fn nat_gateway(topology: &Topology) -> String {
    let vpc = topology.vpc.cidr;
    let mut body = String::new();
    let _ = writeln!(
        body,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(
        body,
        "    ip saddr {vpc} ip daddr != {vpc} oifname \"{ENI}\" masquerade {}",
        comment("NAT gateway: private subnets to the internet")
    );
    let _ = writeln!(body, "  }}");
    replace_table("ip", NAT_TABLE, &body)
}
