//! The twin for a person (`local-stack --vpc`, or the `vpc-twin` binary): starts it, prints the
//! topology (hosts, namespaces, addresses, security groups), the reachability matrix tried for
//! real with the rule deciding each path, the URL to call from `internet` and how to open a
//! shell there; Ctrl-C (or SIGTERM) tears everything down.

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};
use std::fmt::Write as _;

use std::sync::{Arc, Mutex, PoisonError};

use crate::topology::{HostKind, Topology};
use crate::twin::Options;
use crate::{Twin, control, program};

/// The hosts of a topology as a table (node, namespace, subnet, address, security groups).
pub fn describe(topology: &Topology) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| node | namespace | subnet | address | security groups |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| (VPC router) | {} | every subnet, router at base + 1; internet gateway | {} | — |",
        crate::twin::ROUTER,
        topology.vpc.cidr
    );
    for host in &topology.hosts {
        let subnet = match &host.subnet {
            Some(name) => format!("{name} ({})", topology.subnet(name).cidr),
            None => "outside the VPC".to_owned(),
        };
        let address = match host.kind {
            HostKind::AppRunner => format!(
                "{} (connector ENI); public endpoint {}:{}",
                host.address,
                crate::topology::APP_RUNNER_ENDPOINT,
                topology.service_port
            ),
            HostKind::LoadBalancer => format!(
                "{}{}; listener {} → {}:{}",
                host.address,
                host.public_ip
                    .map(|ip| format!(", public {ip}"))
                    .unwrap_or_else(|| " (internal: no public address)".to_owned()),
                crate::topology::LISTENER_PORT,
                topology.frontend().name,
                topology.service_port
            ),
            HostKind::Task(number) if number > topology.desired_tasks => {
                format!("{} (started when a task is replaced)", host.address)
            }
            _ => match host.public_ip {
                Some(ip) => format!("{}, public {ip}", host.address),
                None => host.address.to_string(),
            },
        };
        let groups = if host.groups.is_empty() {
            "—".to_owned()
        } else {
            let named: Vec<String> = host
                .groups
                .iter()
                .map(|group| match topology.groups[group].made_by {
                    Some(maker) => format!("{group} (implicit, {maker})"),
                    None => group.clone(),
                })
                .collect();
            named.join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {subnet} | {address} | {groups} |",
            host.name,
            host.namespace()
        );
    }
    let _ = writeln!(
        out,
        "\nNames the VPC resolver ({}) answers: {} (TTL {} s), {}, {}",
        topology.vpc.resolver(),
        topology.cloud_map.fqdn(),
        topology.cloud_map.ttl,
        topology.database.endpoint,
        crate::twin::secrets_manager_host()
    );
    out
}

/// Runs the twin of `$PULUMI_PROGRAM` (else `pulumi/Pulumi.yaml`) until Ctrl-C or SIGTERM.
pub fn run() -> Result<()> {
    crate::require_root().context("local-stack --vpc runs only as root")?;
    // Block the signals before any thread exists (every thread inherits the mask), so they
    // wait for `sigwait` below and the teardown runs. Children get a clean mask from std.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT and SIGTERM")?;

    let path = program::program_path();
    let topology = program::load()?;
    println!("The VPC twin of {}\n", path.display());
    println!("{}", describe(&topology));
    // A resume holds the first connection about 15 s: the frontend waits for it as on AWS.
    let options = Options::of(&topology).frontend("DB_CONNECT_TIMEOUT", "20s");
    let twin = Twin::start_with(topology, options)?;
    println!("Started in {:.1?}:", twin.start_time);
    for (phase, took) in &twin.phases {
        println!("  {phase}: {took:.1?}");
    }
    let (matrix, mismatches) = twin.matrix()?;
    println!("\nReachability (TCP connect from each node, tried just now):\n{matrix}");
    for mismatch in &mismatches {
        println!("MISMATCH: {mismatch}");
    }
    let internet = twin.namespace_of("internet");
    if let Some(alb) = twin.topology.load_balancer() {
        println!(
            "Express Mode's load balancer ({}) is modelled as a TCP forwarder: its listener port takes plain \
             HTTP (no TLS termination, no HTTP routing) and opens a connection to {} from its VPC address.\n",
            alb.name,
            twin.topology.frontend().name
        );
    }
    println!(
        "The service, as the internet sees it: {url}\n\n  ip netns exec {internet} curl -s {url}\n  ip netns exec {internet} curl -s {ps}\n\n\
         A shell on a node: ip netns exec <namespace> bash   (e.g. ip netns exec {internet} bash;\n\
         VPC nodes use the VPC resolver through /etc/netns/<namespace>/resolv.conf)\n\
         Security groups: ip netns exec {aurora} nft list table inet avt_sg\n\n\
         Aurora ({status_first}), from another shell:\n  {exe} aurora status | failover | reboot | vanish | restore | pause-after SECONDS|never\n\n\
         Ctrl-C stops everything and removes the namespaces.",
        url = twin.url("/"),
        ps = twin.url("/ecs-private-service"),
        aurora = twin.namespace_of("aurora"),
        status_first = twin.aurora_status().lines().next().unwrap_or_default(),
        exe = std::env::current_exe()
            .map(|path| path.display().to_string())
            .unwrap_or_else(|_| "vpc-twin".to_owned()),
    );
    let twin: control::Shared = Arc::new(Mutex::new(Some(twin)));
    control::serve(Arc::clone(&twin))?;
    let signal = signals.wait().context("waiting for Ctrl-C")?;
    println!("\n{signal}: stopping");
    control::close();
    let twin = twin
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .context("the twin was already stopped")?;
    let took = twin.stop()?;
    println!("Stopped and removed in {took:.1?}");
    Ok(())
}
