//! What the program allows, path by path, with the component and rule that decides it (as the
//! AWS VPC Reachability Analyzer explains a path). The twin's tests then check the real
//! network against these verdicts, both ways.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::topology::{
    EgressType, Host, HostKind, LISTENER_PORT, Peer, Platform, Rule, SubnetKind, Topology,
};

/// The AWS exception for the VPC resolver, named once (also used by the nftables compiler).
pub const RESOLVER_EXCEPTION: &str =
    "AWS exception: DNS to the Route 53 Resolver (VPC base+2) is not filtered by security groups";
/// Why nothing in the VPC reaches the App Runner service through its connector's ENIs.
pub const CONNECTOR_IS_OUTBOUND: &str = "App Runner VPC connector: outgoing traffic only (its security groups' ingress rules \
     open nothing); the service is reached through its public endpoint";
/// The AWS exception for link-local metadata endpoints.
pub const METADATA_EXCEPTION: &str =
    "AWS exception: link-local metadata (169.254.169.254, 169.254.170.2) is not filtered by security groups";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Open,
    Blocked,
}

/// One TCP path `from` → `to:port` and why it is open or blocked.
#[derive(Clone, Debug)]
pub struct Path {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub verdict: Verdict,
    pub because: String,
}

/// The paths the matrix test checks: every pair the issue names, and the ones that must stay
/// shut. The frontend is `apprunner` or `frontend` (Express); Express adds its load balancer:
/// the internet to the listener, and the listener's own path to the task.
pub fn standard_probes(topology: &Topology) -> Vec<(String, String, u16)> {
    let service = topology.service_port;
    let db = topology.database.port;
    let front = topology.frontend().name.as_str();
    let mut probes = Vec::new();
    if let Some(alb) = topology.load_balancer() {
        probes.push(("internet", alb.name.as_str(), LISTENER_PORT));
        probes.push((alb.name.as_str(), front, service));
    }
    probes.extend([
        ("internet", front, service),
        ("internet", "aurora", db),
        ("internet", "task-1", 8080),
        (front, "aurora", db),
        (front, "task-1", 8080),
        (front, "internet", 443),
        (front, "internet", 80),
        (front, "resolver", 53),
        ("task-1", "aurora", db),
        ("task-1", front, service),
        ("task-1", "internet", 443),
        ("task-1", "resolver", 53),
        ("aurora", "internet", 443),
        ("aurora", "task-1", 8080),
    ]);
    probes
        .into_iter()
        .map(|(from, to, port)| (from.to_owned(), to.to_owned(), port))
        .collect()
}

/// The verdict for TCP `from` → `to:port`.
pub fn analyze(topology: &Topology, from: &str, to: &str, port: u16) -> Path {
    let source = topology.host(from);
    let target = topology.host(to);
    let (verdict, because) = match decide(topology, source, target, port) {
        Ok(why) => (Verdict::Open, why),
        Err(why) => (Verdict::Blocked, why),
    };
    Path {
        from: from.to_owned(),
        to: to.to_owned(),
        port,
        verdict,
        because,
    }
}

fn decide(topology: &Topology, source: &Host, target: &Host, port: u16) -> Result<String, String> {
    use HostKind::{AppRunner, Internet, LoadBalancer, Resolver};
    match (source.kind, target.kind) {
        (Internet, AppRunner) => {
            if port == topology.service_port {
                Ok(format!(
                    "App Runner public endpoint (isPubliclyAccessible) forwards to the service port {port}"
                ))
            } else {
                Err(format!(
                    "App Runner's public endpoint forwards only the service port {}",
                    topology.service_port
                ))
            }
        }
        (Internet, _) => {
            let Some(public_ip) = target.public_ip else {
                return Err(format!(
                    "internet gateway: {} has no public IPv4 address ({}); only replies enter the VPC",
                    target.name,
                    match target.kind {
                        LoadBalancer => "an internal load balancer: the service's subnets are private",
                        _ => "no public IP",
                    }
                ));
            };
            let gateway = format!("internet gateway: {public_ip} ↔ {} (1:1 NAT)", target.address);
            let ingress = ingress_rule(topology, source, target, port).map_err(|why| {
                format!(
                    "{gateway}; {why}: {} has a public IPv4 address, but nothing admits the internet",
                    target.name
                )
            })?;
            if target.kind != LoadBalancer {
                return Ok(format!("{gateway}; {ingress}"));
            }
            if port != LISTENER_PORT {
                return Err(format!(
                    "{gateway}; {ingress}; but Express Mode's load balancer listens on {LISTENER_PORT} only"
                ));
            }
            let task = topology.frontend();
            let listener = decide(topology, target, task, topology.service_port)
                .map_err(|why| format!("{gateway}; {ingress}; listener → {}: {why}", task.name))?;
            Ok(format!(
                "{gateway}; {ingress}; listener {LISTENER_PORT} → {}:{} from {}'s VPC address: {listener}",
                task.name, topology.service_port, target.name
            ))
        }
        (AppRunner, _)
            if topology.platform
                == (Platform::AppRunner {
                    egress: EgressType::Default,
                }) =>
        {
            match target.kind {
                Internet => Ok("egressType DEFAULT: App Runner's own internet access".into()),
                _ => Err("egressType DEFAULT: the service has no path into the VPC".into()),
            }
        }
        (_, Internet) => {
            let egress = egress_rule(topology, source, target, port)?;
            let subnet = source
                .subnet
                .as_deref()
                .map(|name| topology.subnet(name))
                .ok_or_else(|| format!("{} has no subnet", source.name))?;
            let route = match (subnet.kind, source.public_ip) {
                (SubnetKind::Public, Some(public_ip)) => format!(
                    "public subnet {}: 0.0.0.0/0 → internet gateway, leaving as its public IPv4 {public_ip}",
                    subnet.name
                ),
                (SubnetKind::Public, None) if source.kind == HostKind::Nat => {
                    format!("public subnet {}: 0.0.0.0/0 → internet gateway", subnet.name)
                }
                (SubnetKind::Public, None) => {
                    return Err(format!(
                        "public subnet {}: 0.0.0.0/0 → internet gateway, but {} has no public IPv4 address to leave with",
                        subnet.name, source.name
                    ));
                }
                _ => match topology.nat_for(subnet) {
                    Some(nat) => format!(
                        "route table of {}: 0.0.0.0/0 → {} (natGateways {:?}) → internet gateway",
                        subnet.name, nat.name, topology.nat
                    ),
                    None => {
                        return Err(format!(
                            "route table of {}: no 0.0.0.0/0 route (natGateways.strategy None)",
                            subnet.name
                        ));
                    }
                },
            };
            Ok(format!("{egress}; {route}"))
        }
        (_, Resolver) if port == 53 && !topology.vpc.dns_support => {
            Err("the VPC's enableDnsSupport is off: the Route 53 Resolver does not answer".into())
        }
        (_, Resolver) if port == 53 => Ok(RESOLVER_EXCEPTION.into()),
        (_, AppRunner) => Err(CONNECTOR_IS_OUTBOUND.into()),
        _ => {
            let egress = egress_rule(topology, source, target, port)?;
            let ingress = ingress_rule(topology, source, target, port)?;
            Ok(format!("{egress}; {ingress}"))
        }
    }
}

/// Whether `host` (at `address`) is the rule's peer: inside its CIDR, or carrying its group.
fn peer_matches(rule: &Rule, address: Ipv4Addr, host: &Host) -> bool {
    match &rule.peer {
        Peer::Cidr(cidr) => cidr.contains(&address),
        Peer::Group(group) => host.groups.contains(group),
    }
}

fn egress_rule(topology: &Topology, source: &Host, target: &Host, port: u16) -> Result<String, String> {
    if source.groups.is_empty() {
        return Ok(format!("{} carries no security group", source.name));
    }
    for group in &source.groups {
        for rule in &topology.groups[group].egress {
            if rule.allows_tcp_port(port) && peer_matches(rule, target.address, target) {
                return Ok(format!(
                    "egress {} ({}: {} to {})",
                    rule.name,
                    group_label(topology, group),
                    rule.what(),
                    peer_label(rule)
                ));
            }
        }
    }
    Err(format!(
        "egress of {}: no rule allows tcp/{port} to {} (default deny)",
        source.groups.join(", "),
        target.name
    ))
}

fn ingress_rule(topology: &Topology, source: &Host, target: &Host, port: u16) -> Result<String, String> {
    if target.groups.is_empty() {
        return Ok(format!("{} carries no security group", target.name));
    }
    for group in &target.groups {
        for rule in &topology.groups[group].ingress {
            if rule.allows_tcp_port(port) && peer_matches(rule, source.address, source) {
                return Ok(format!(
                    "ingress {} ({}: {} from {})",
                    rule.name,
                    group_label(topology, group),
                    rule.what(),
                    peer_label(rule)
                ));
            }
        }
    }
    Err(format!(
        "ingress of {}: no rule allows tcp/{port} from {} (default deny)",
        target.groups.join(", "),
        source.name
    ))
}

/// A group's name, marked when AWS made it rather than the program (so a reader does not look
/// for it in the program).
fn group_label(topology: &Topology, group: &str) -> String {
    match topology.groups[group].made_by {
        Some(maker) => format!("{group}, implicit, made by {maker}"),
        None => group.to_owned(),
    }
}

fn peer_label(rule: &Rule) -> String {
    match &rule.peer {
        Peer::Cidr(cidr) => cidr.to_string(),
        Peer::Group(group) => group.clone(),
    }
}

/// The matrix as a table: path, expected, observed (when given), deciding rule.
pub fn table(rows: &[(Path, Option<String>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| from | to | expected | observed | decided by |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (path, observed) in rows {
        let _ = writeln!(
            out,
            "| {} | {}:{} | {} | {} | {} |",
            path.from,
            path.to,
            path.port,
            match path.verdict {
                Verdict::Open => "open",
                Verdict::Blocked => "blocked",
            },
            observed.as_deref().unwrap_or("-"),
            path.because
        );
    }
    out
}

/// The paths of a reachability contract: between the nodes a reviewer cares about (the internet,
/// the frontend and its load balancer, the first private-service task, the database, the
/// resolver), on every port a rule of the program names and the ports the system uses.
pub fn contract_paths(topology: &Topology) -> Vec<(String, String, u16)> {
    let mut ports: std::collections::BTreeSet<u16> = [
        topology.service_port,
        topology.database.port,
        8080,
        LISTENER_PORT,
        80,
        53,
    ]
    .into_iter()
    .collect();
    for group in topology.groups.values() {
        for rule in group.ingress.iter().chain(&group.egress) {
            if let Some((from, to)) = rule.ports.filter(|(from, to)| from == to) {
                ports.insert(from.max(to));
            }
        }
    }
    let nodes: Vec<&str> = ["internet"]
        .into_iter()
        .chain(topology.load_balancer().map(|alb| alb.name.as_str()))
        .chain([topology.frontend().name.as_str(), "task-1", "aurora", "resolver"])
        .collect();
    // The resolver only answers: it is a destination, never a source.
    let sources = nodes.iter().filter(|node| **node != "resolver");
    let mut paths = Vec::new();
    for from in sources {
        for to in nodes.iter().filter(|to| *to != from) {
            // The resolver listens on 53 alone.
            let ports = ports.iter().filter(|port| *to != "resolver" || **port == 53);
            for port in ports {
                paths.push(((*from).to_owned(), (*to).to_owned(), *port));
            }
        }
    }
    paths
}

/// The program's contract: one line a path, `open` or `blocked`, and after `#` the rule or
/// reason that decides it (for the reader; [`contract_changes`] compares verdicts only).
pub fn contract(topology: &Topology) -> String {
    let mut out = String::new();
    for (from, to, port) in contract_paths(topology) {
        let path = analyze(topology, &from, &to, port);
        let _ = writeln!(
            out,
            "{:<8} {:<28} # {}",
            verdict_word(path.verdict),
            format!("{from} -> {to}:{port}"),
            path.because
        );
    }
    out
}

fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Open => "open",
        Verdict::Blocked => "blocked",
    }
}

/// Every path whose verdict differs from `committed` (a contract as [`contract`] writes it),
/// with what decides it now; paths the contract lacks or no longer has count too.
pub fn contract_changes(topology: &Topology, committed: &str) -> Result<Vec<String>, String> {
    let mut expected = std::collections::BTreeMap::new();
    for (number, line) in committed.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) {
            (Some(verdict @ ("open" | "blocked")), Some(from), Some("->"), Some(to), None) => {
                expected.insert(format!("{from} -> {to}"), verdict.to_owned());
            }
            _ => {
                return Err(format!(
                    "line {}: not `open|blocked FROM -> TO:PORT`: {line}",
                    number + 1
                ));
            }
        }
    }
    let mut changes = Vec::new();
    for (from, to, port) in contract_paths(topology) {
        let path = analyze(topology, &from, &to, port);
        let key = format!("{from} -> {to}:{port}");
        let now = verdict_word(path.verdict);
        match expected.remove(&key) {
            Some(before) if before == now => {}
            Some(before) => changes.push(format!(
                "{key}: {before} in the contract, {now} now: {}",
                path.because
            )),
            None => changes.push(format!("{key}: not in the contract, {now} now: {}", path.because)),
        }
    }
    changes.extend(
        expected
            .into_keys()
            .map(|key| format!("{key}: in the contract, no longer a path of the program")),
    );
    Ok(changes)
}
