//! The VPC resolver at the VPC base + 2, as the Route 53 Resolver behaves for a client: a cache
//! in front of the authoritative records. A record that changes (a failover moving Aurora's
//! cluster endpoint, a task registered in Cloud Map) reaches a client only once what the cache
//! holds has expired: that stale window is what makes a failover hard, and the twin must have it.
//!
//! - Unbound at base + 2: a caching resolver, positive answers kept for the record's TTL, forwarding
//!   every miss to
//! - dnsmasq on the resolver node's loopback (127.0.0.1:5353): the records — hosts files (Cloud Map,
//!   the Aurora instances, the AWS endpoint; `--local-ttl`) and the CNAMEs of Aurora's endpoints
//!   (5 s, as Aurora's DNS zones). It answers every name itself (`--local=/#/`): unknown names and
//!   missing AAAA get NXDOMAIN/NODATA.
//!
//! Not modelled: dnsmasq's negative answers carry no SOA, so Unbound keeps them 5 s (its fixed
//! time for negative answers without one), where Route 53 uses the zone's SOA negative TTL.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ns::{self, NsProcess, wait_for};

/// The authoritative records' address on the resolver node.
const RECORDS_PORT: u16 = 5353;

/// How long the resolver's processes may take to listen (a loaded CI machine).
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// A CNAME the records hold: `alias` → `target` for `ttl` seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cname {
    pub alias: String,
    pub target: String,
    pub ttl: u32,
}

pub struct Resolver {
    namespace: String,
    address: Ipv4Addr,
    dir: PathBuf,
    /// TTL of the hosts files' records.
    local_ttl: u32,
    hosts_files: Vec<PathBuf>,
    records: Option<NsProcess>,
    cache: Option<NsProcess>,
}

impl Resolver {
    /// Starts the records (`hosts_files`, `cnames`) and the cache in front of them.
    pub fn start(
        namespace: &str,
        address: Ipv4Addr,
        dir: &Path,
        local_ttl: u32,
        hosts_files: Vec<PathBuf>,
        cnames: &[Cname],
    ) -> Result<Self> {
        let mut resolver = Self {
            namespace: namespace.to_owned(),
            address,
            dir: dir.to_owned(),
            local_ttl,
            hosts_files,
            records: None,
            cache: None,
        };
        resolver.start_records(cnames)?;
        resolver.start_cache()?;
        Ok(resolver)
    }

    /// Rereads the hosts files (a Cloud Map registration); clients see it once their cached
    /// answer has expired.
    pub fn reload_hosts(&self) -> Result<()> {
        self.records
            .as_ref()
            .context("the resolver's records are not running")?
            .hangup()
    }

    /// Replaces the CNAMEs (a failover moving the cluster endpoint). dnsmasq reads CNAMEs only
    /// at start, so it restarts; the cache keeps answering meanwhile, from what it holds.
    pub fn set_cnames(&mut self, cnames: &[Cname]) -> Result<()> {
        self.records.take();
        self.start_records(cnames)
    }

    /// Both logs, for failure messages.
    pub fn processes(&self) -> impl Iterator<Item = &NsProcess> {
        self.records.iter().chain(&self.cache)
    }

    fn start_records(&mut self, cnames: &[Cname]) -> Result<()> {
        let conf = self.dir.join("vpc-records.conf");
        let text: String = cnames
            .iter()
            .map(|cname| format!("cname={},{},{}\n", cname.alias, cname.target, cname.ttl))
            .collect();
        std::fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
        let mut args = vec![
            "--keep-in-foreground".to_owned(),
            format!("--conf-file={}", conf.display()),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--user=root".to_owned(),
            "--pid-file=".to_owned(),
            "--bind-interfaces".to_owned(),
            "--listen-address=127.0.0.1".to_owned(),
            format!("--port={RECORDS_PORT}"),
            format!("--local-ttl={}", self.local_ttl),
            // Authoritative for every name (no upstream): unknown names and missing AAAA get
            // NXDOMAIN/NODATA at once instead of REFUSED. Its own cache off: the cache is Unbound.
            "--local=/#/".to_owned(),
            "--cache-size=0".to_owned(),
            "--log-queries".to_owned(),
            "--log-facility=-".to_owned(),
        ];
        args.extend(
            self.hosts_files
                .iter()
                .map(|file| format!("--addn-hosts={}", file.display())),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let records = NsProcess::spawn(
            "dnsmasq (the VPC's records)",
            &self.namespace,
            Path::new("dnsmasq"),
            &args,
            &[],
            self.dir.join("dnsmasq.log"),
        )?;
        self.records =
            Some(self.await_listening(records, SocketAddr::from((Ipv4Addr::LOCALHOST, RECORDS_PORT)))?);
        Ok(())
    }

    fn start_cache(&mut self) -> Result<()> {
        let conf = self.dir.join("unbound.conf");
        std::fs::write(&conf, unbound_conf(self.address, &self.dir))
            .with_context(|| format!("writing {}", conf.display()))?;
        let cache = NsProcess::spawn(
            "unbound (the VPC resolver)",
            &self.namespace,
            Path::new("unbound"),
            &["-d", "-c", &conf.display().to_string()],
            &[],
            self.dir.join("unbound.log"),
        )
        .context("starting unbound (apt-get install -y unbound; tests/setup installs it)")?;
        self.cache = Some(self.await_listening(cache, SocketAddr::from((self.address, 53)))?);
        Ok(())
    }

    fn await_listening(&self, mut process: NsProcess, addr: SocketAddr) -> Result<NsProcess> {
        wait_for(&format!("{} listening", process.name), STARTUP_WAIT, || {
            process.check_running()?;
            Ok(
                (ns::tcp_connect(&self.namespace, addr, Duration::from_millis(200))?
                    == ns::Connect::Connected)
                    .then_some(()),
            )
        })?;
        Ok(process)
    }
}

/// Unbound as a caching, non-validating forwarder in the foreground, answering the VPC: every
/// positive answer kept for its TTL (`cache-min-ttl: 0`), nothing served stale or prefetched.
fn unbound_conf(address: Ipv4Addr, dir: &Path) -> String {
    format!(
        "server:\n\
         \x20 interface: {address}\n\
         \x20 port: 53\n\
         \x20 do-daemonize: no\n\
         \x20 username: \"\"\n\
         \x20 chroot: \"\"\n\
         \x20 directory: \"{dir}\"\n\
         \x20 pidfile: \"\"\n\
         \x20 use-syslog: no\n\
         \x20 logfile: \"\"\n\
         \x20 verbosity: 1\n\
         \x20 num-threads: 1\n\
         \x20 do-ip6: no\n\
         \x20 access-control: 0.0.0.0/0 allow\n\
         \x20 module-config: \"iterator\"\n\
         \x20 do-not-query-localhost: no\n\
         \x20 cache-min-ttl: 0\n\
         \x20 prefetch: no\n\
         \x20 serve-expired: no\n\
         \x20 qname-minimisation: no\n\
         forward-zone:\n\
         \x20 name: \".\"\n\
         \x20 forward-addr: 127.0.0.1@{RECORDS_PORT}\n",
        dir = dir.display()
    )
}
