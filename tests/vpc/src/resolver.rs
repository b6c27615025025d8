//! The VPC resolver at the VPC base + 2, as the Route 53 Resolver behaves for a client: a cache
//! in front of the authoritative records. A record that changes (a failover moving Aurora's
//! cluster endpoint, a task registered in Cloud Map) reaches a client only once what the cache
//! holds has expired: that stale window is what makes a failover hard, and the twin must have it.
//!
//! - Unbound at base + 2: a caching resolver, positive answers kept for the record's TTL, negative
//!   ones for the zone's SOA TTL (RFC 2308), forwarding every miss to
//! - the private zone (the Cloud Map namespace) on the resolver node's loopback (127.0.0.1:5354):
//!   a second Unbound, authoritative for the zone from a zone file — the SOA as Cloud Map makes it
//!   and an A record per registered task — reloaded through `unbound-control` as tasks come and go;
//! - everything else from dnsmasq on the same loopback (127.0.0.1:5353): hosts files (the Aurora
//!   instances, the AWS endpoint; `--local-ttl`) and the CNAMEs of Aurora's endpoints (5 s, as
//!   Aurora's DNS zones). It answers every name itself (`--local=/#/`): unknown names and missing
//!   AAAA get NXDOMAIN/NODATA, without an SOA, which Unbound keeps 5 s.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ns::{self, NsProcess, wait_for};

/// dnsmasq's address on the resolver node.
const RECORDS_PORT: u16 = 5353;
/// The private zone's authoritative server's address on the resolver node.
const ZONE_PORT: u16 = 5354;

/// How long the resolver's processes may take to listen (a loaded CI machine).
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// A CNAME the records hold: `alias` → `target` for `ttl` seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cname {
    pub alias: String,
    pub target: String,
    pub ttl: u32,
}

/// A private hosted zone (a Cloud Map namespace) with one name that has an A record per address.
#[derive(Clone, Debug)]
pub struct PrivateZone {
    /// `apprunner.demo`
    pub name: String,
    /// The SOA's TTL: how long a resolver keeps "no such name".
    pub negative_ttl: u32,
    /// The name's records' TTL.
    pub record_ttl: u32,
}

pub struct Resolver {
    namespace: String,
    address: Ipv4Addr,
    dir: PathBuf,
    /// TTL of the hosts files' records.
    local_ttl: u32,
    hosts_files: Vec<PathBuf>,
    zone: Option<PrivateZone>,
    /// The zone file's serial, one more at each change.
    serial: u32,
    records: Option<NsProcess>,
    authority: Option<NsProcess>,
    cache: Option<NsProcess>,
}

impl Resolver {
    /// Starts the records (`hosts_files`, `cnames`), the private zone with `zone_records` (none:
    /// the VPC does not resolve private zones) and the cache in front of them.
    pub fn start(
        namespace: &str,
        address: Ipv4Addr,
        dir: &Path,
        local_ttl: u32,
        hosts_files: Vec<PathBuf>,
        cnames: &[Cname],
        zone_records: Option<(PrivateZone, &[(String, Ipv4Addr)])>,
    ) -> Result<Self> {
        let mut resolver = Self {
            namespace: namespace.to_owned(),
            address,
            dir: dir.to_owned(),
            local_ttl,
            hosts_files,
            zone: None,
            serial: 0,
            records: None,
            authority: None,
            cache: None,
        };
        resolver.start_records(cnames)?;
        if let Some((zone, records)) = zone_records {
            resolver.zone = Some(zone);
            resolver.write_zone(records)?;
            resolver.start_authority()?;
        }
        resolver.start_cache()?;
        Ok(resolver)
    }

    /// Replaces the private zone's A records (a Cloud Map registration or deregistration);
    /// clients see it once what their resolver holds — the old answer, or "no such name" — has
    /// expired. Without a private zone there is nothing to change.
    pub fn set_zone_records(&mut self, records: &[(String, Ipv4Addr)]) -> Result<()> {
        let Some(zone) = &self.zone else {
            return Ok(());
        };
        let name = format!("{}.", zone.name);
        self.write_zone(records)?;
        ns::run(
            "unbound-control",
            &[
                "-c",
                &self.authority_conf().display().to_string(),
                "auth_zone_reload",
                &name,
            ],
        )
        .map(drop)
        .context("reloading the private zone")
    }

    /// Replaces the CNAMEs (a failover moving the cluster endpoint). dnsmasq reads CNAMEs only
    /// at start, so it restarts; the cache keeps answering meanwhile, from what it holds.
    pub fn set_cnames(&mut self, cnames: &[Cname]) -> Result<()> {
        self.records.take();
        self.start_records(cnames)
    }

    /// Every log, for failure messages.
    pub fn processes(&self) -> impl Iterator<Item = &NsProcess> {
        self.records.iter().chain(&self.authority).chain(&self.cache)
    }

    fn zone_file(&self) -> PathBuf {
        self.dir.join("private-zone.db")
    }

    fn authority_conf(&self) -> PathBuf {
        self.dir.join("private-zone.conf")
    }

    /// The zone as Route 53 keeps a Cloud Map namespace: Route 53's SOA (refresh 7200, retry
    /// 900, expire 1209600, minimum 86400) with the namespace's SOA TTL, so the negative TTL is
    /// that TTL. Replaced atomically: Unbound may read it at any moment.
    fn write_zone(&mut self, records: &[(String, Ipv4Addr)]) -> Result<()> {
        let zone = self.zone.as_ref().context("the resolver has no private zone")?;
        self.serial += 1;
        let mut text = format!(
            "$ORIGIN {name}.\n\
             @ {soa_ttl} IN SOA ns-1536.awsdns-00.co.uk. awsdns-hostmaster.amazon.com. {serial} 7200 900 1209600 86400\n\
             @ 172800 IN NS ns-1536.awsdns-00.co.uk.\n",
            name = zone.name,
            soa_ttl = zone.negative_ttl,
            serial = self.serial,
        );
        for (name, address) in records {
            let relative = name
                .strip_suffix(&format!(".{}", zone.name))
                .with_context(|| format!("{name} is not in the zone {}", zone.name))?;
            text.push_str(&format!("{relative} {} IN A {address}\n", zone.record_ttl));
        }
        let temporary = self.dir.join("private-zone.db.new");
        std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, self.zone_file())?;
        Ok(())
    }

    fn start_authority(&mut self) -> Result<()> {
        let zone = self.zone.as_ref().context("the resolver has no private zone")?;
        let conf = authority_conf(&zone.name, &self.zone_file(), &self.dir);
        let authority = self.start_unbound(
            "unbound (the private zone's records)",
            &self.authority_conf(),
            &conf,
            "private-zone.log",
            SocketAddr::from((Ipv4Addr::LOCALHOST, ZONE_PORT)),
        )?;
        self.authority = Some(authority);
        Ok(())
    }

    /// Writes `text` to `conf` and runs Unbound on it until it listens at `addr`.
    fn start_unbound(
        &self,
        name: &str,
        conf: &Path,
        text: &str,
        log: &str,
        addr: SocketAddr,
    ) -> Result<NsProcess> {
        std::fs::write(conf, text).with_context(|| format!("writing {}", conf.display()))?;
        let process = NsProcess::spawn(
            name,
            &self.namespace,
            Path::new("unbound"),
            &["-d", "-c", &conf.display().to_string()],
            &[],
            self.dir.join(log),
        )
        .context("starting unbound (apt-get install -y unbound; tests/setup installs it)")?;
        self.await_listening(process, addr)
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
        let private_zone = self.zone.as_ref().map(|zone| zone.name.as_str());
        let conf = unbound_conf(self.address, &self.dir, private_zone);
        let cache = self.start_unbound(
            "unbound (the VPC resolver)",
            &self.dir.join("unbound.conf"),
            &conf,
            "unbound.log",
            SocketAddr::from((self.address, 53)),
        )?;
        self.cache = Some(cache);
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

/// The `server:` clause both Unbounds share: in the foreground, as root, no chroot or syslog,
/// iterator only (nothing validated), listening on `address`:`port` for `clients`.
fn unbound_server(address: Ipv4Addr, port: u16, clients: &str, dir: &Path) -> String {
    format!(
        "server:\n\
         \x20 interface: {address}\n\
         \x20 port: {port}\n\
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
         \x20 access-control: {clients} allow\n\
         \x20 module-config: \"iterator\"\n",
        dir = dir.display()
    )
}

/// Unbound as a caching forwarder answering the VPC: every positive answer kept for its TTL
/// (`cache-min-ttl: 0`), every negative one for its SOA's (RFC 2308), nothing served stale or
/// prefetched; the private zone from its own server, everything else from dnsmasq.
fn unbound_conf(address: Ipv4Addr, dir: &Path, private_zone: Option<&str>) -> String {
    let private_zone = private_zone
        .map(|name| {
            format!(
                "forward-zone:\n\
                 \x20 name: \"{name}.\"\n\
                 \x20 forward-addr: 127.0.0.1@{ZONE_PORT}\n"
            )
        })
        .unwrap_or_default();
    format!(
        "{server}\
         \x20 do-not-query-localhost: no\n\
         \x20 cache-min-ttl: 0\n\
         \x20 prefetch: no\n\
         \x20 serve-expired: no\n\
         \x20 qname-minimisation: no\n\
         forward-zone:\n\
         \x20 name: \".\"\n\
         \x20 forward-addr: 127.0.0.1@{RECORDS_PORT}\n\
         {private_zone}",
        server = unbound_server(address, 53, "0.0.0.0/0", dir),
    )
}

/// Unbound serving one zone from its file, authoritatively, on the resolver node's loopback,
/// with a control socket for `auth_zone_reload`.
fn authority_conf(zone: &str, zone_file: &Path, dir: &Path) -> String {
    format!(
        "{server}\
         remote-control:\n\
         \x20 control-enable: yes\n\
         \x20 control-interface: \"{control}\"\n\
         \x20 control-use-cert: no\n\
         auth-zone:\n\
         \x20 name: \"{zone}.\"\n\
         \x20 zonefile: \"{zone_file}\"\n\
         \x20 for-downstream: yes\n\
         \x20 for-upstream: no\n\
         \x20 fallback-enabled: no\n",
        server = unbound_server(Ipv4Addr::LOCALHOST, ZONE_PORT, "127.0.0.0/8", dir),
        control = dir.join("private-zone.ctl").display(),
        zone_file = zone_file.display(),
    )
}
