//! The one place that turns a [`Topology`] into a running network and the system in it.
//!
//! | namespace | what runs there |
//! |---|---|
//! | `avt-vpc` | the VPC router: one bridge per subnet (router at base + 1), the internet gateway (`igw0`), per-subnet route tables (private → NAT) |
//! | `avt-internet` | the client and `secretsmanager.<region>.amazonaws.com` (moto, TLS on 443) |
//! | `avt-apprunner` | App Runner's frontend: public endpoint `pub0` (inbound), connector ENI `eni0` (all outbound) |
//! | `avt-frontend` | Express Mode's frontend task: one ENI in the service's subnet, a public IPv4 via the internet gateway |
//! | `avt-alb` | a node of Express Mode's load balancer: the listener (nftables DNAT + SNAT, no process) forwards to the task |
//! | `avt-resolver` | the VPC resolver at base + 2: Unbound caching as Route 53 Resolver does, in front of the Cloud Map namespace (an authoritative Unbound with the namespace's SOA) and dnsmasq (Aurora's endpoints and instances, the AWS endpoint) on the namespace's loopback |
//! | `avt-nat-<az>` | the NAT gateway (forwarding + masquerade) in a public subnet |
//! | `avt-aurora` | Aurora: a writer and a synchronous reader, each at an address of the node's ENI, paused and resumed, failed over, rebooted, vanished ([`crate::aurora`]) |
//! | `avt-task-<n>` | one ECS task: the private service and its own task metadata stand-in |

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::aurora::{self, Aurora, AuroraSpec};
use crate::firewall::{self, ENI, IGW_IF, Members, PUBLIC_ENDPOINT_IF};
use crate::ns::{self, NsProcess, in_namespace, wait_for};
use crate::program::REGION;
use crate::reach;
use crate::resolver::{Cname, PrivateZone, Resolver};
use crate::topology::{
    APP_RUNNER_CLIENT_SIDE, APP_RUNNER_ENDPOINT, EgressType, Env, HostKind, INTERNET_GATEWAY, INTERNET_HOST,
    Platform, SubnetKind, Topology,
};

/// The VPC router's namespace.
pub const ROUTER: &str = "avt-vpc";

/// How long a process of the twin may take to become ready. Only a ceiling for polling (each
/// wait ends as soon as the process answers, or at once when it exits): generous, because CI
/// starts the twin on a loaded 2-core machine right after other suites.
const STARTUP_WAIT: Duration = Duration::from_secs(60);

/// How long a TCP connect waits before the path counts as blocked ("no answer", a dropped SYN).
/// An open path answers within milliseconds; 3 s covers one SYN retransmission (sent after 1 s)
/// on a loaded machine, so an open path is never judged blocked, while a refusal still shows at
/// once.
pub const NO_ANSWER_AFTER: Duration = Duration::from_secs(3);

/// How the frontend is configured beyond what the program gives it (short bounds for tests).
pub const FRONTEND_EXTRA_ENV: [(&str, &str); 4] = [
    ("DB_CONNECT_TIMEOUT", "2s"),
    ("DB_ACQUIRE_TIMEOUT", "2s"),
    ("RUST_LOG", "info"),
    ("ECSPRIVATESERVICE_TIMEOUT", "2s"),
];

/// What a twin runs with beyond its program.
#[derive(Clone, Debug)]
pub struct Options {
    /// Environment for the frontend, over [`FRONTEND_EXTRA_ENV`].
    pub frontend_env: Vec<(String, String)>,
    /// Aurora's pause and resume; by default the program's (`secondsUntilAutoPause` when the
    /// minimum capacity is 0 ACU) with Aurora's ~15 s resume.
    pub lifecycle: harness::Lifecycle,
}

impl Options {
    pub fn of(topology: &Topology) -> Self {
        Self {
            frontend_env: Vec::new(),
            lifecycle: harness::Lifecycle {
                pause_after: topology.database.auto_pause,
                resume_takes: aurora::RESUME_TAKES,
            },
        }
    }

    /// `options` with `key=value` in the frontend's environment.
    pub fn frontend(mut self, key: &str, value: &str) -> Self {
        self.frontend_env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// The Secrets Manager endpoint name the SDK uses.
pub fn secrets_manager_host() -> String {
    format!("secretsmanager.{REGION}.amazonaws.com")
}

/// A running twin. Dropping it stops every process and removes every namespace it made.
pub struct Twin {
    pub topology: Topology,
    /// Where `internet` sends requests for the service ([`Topology::public_entry`]).
    public: SocketAddr,
    dir: tempfile::TempDir,
    ca_pem: String,
    ca_path: PathBuf,
    ca: harness::TestCa,
    namespaces: Vec<String>,
    frontend: Option<NsProcess>,
    tasks: BTreeMap<usize, Task>,
    registered: BTreeSet<usize>,
    resolver: Option<Resolver>,
    aurora: Option<Aurora>,
    options: Options,
    moto: Option<NsProcess>,
    secret_arn: String,
    db_password: String,
    /// How long [`Twin::start`] took, and each phase.
    pub start_time: Duration,
    pub phases: Vec<(&'static str, Duration)>,
    _lock: nix::fcntl::Flock<File>,
}

struct Task {
    process: NsProcess,
    _metadata: harness::EcsMetadata,
    arn: String,
}

impl Twin {
    /// Builds the network of `topology` and starts the whole system in it: Aurora, the secret,
    /// the desired number of tasks (registered in Cloud Map), the frontend.
    pub fn start(topology: Topology) -> Result<Self> {
        let options = Options::of(&topology);
        Self::start_with(topology, options)
    }

    /// [`start`](Self::start) with `options`.
    pub fn start_with(topology: Topology, options: Options) -> Result<Self> {
        crate::require_root()?;
        if topology.platform
            == (Platform::AppRunner {
                egress: EgressType::Default,
            })
        {
            bail!(
                "the program's App Runner service has egressType DEFAULT: its paths are analysed \
                 (reach), but the twin builds only VPC egress through the connector"
            );
        }
        let entry = topology.public_entry().ok_or_else(|| {
            anyhow!(
                "the program's frontend has no public entry (an Express service in private subnets gets an \
                 internal load balancer): its paths are analysed (reach), but the twin's walkthrough runs \
                 from the internet"
            )
        })?;
        let public = SocketAddr::from((entry.address, entry.port));
        // Waiting for another twin is not part of starting this one.
        let lock = take_lock()?;
        let started = Instant::now();
        stop_leftover_aurora();
        let removed = ns::remove_leftovers()?;
        if !removed.is_empty() {
            eprintln!(
                "vpc-twin: removed leftovers of an earlier run: {}",
                removed.join(", ")
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(crate::WORKDIR_PREFIX)
            .tempdir()
            .context("creating the twin's directory")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let ca = harness::TestCa::new()?;
        let ca_pem = ca.cert_pem().to_owned();
        let ca_path = dir.path().join("test-ca.pem");
        std::fs::write(&ca_path, &ca_pem)?;
        let mut twin = Self {
            topology,
            public,
            dir,
            ca_pem,
            ca_path,
            ca,
            namespaces: Vec::new(),
            frontend: None,
            tasks: BTreeMap::new(),
            registered: BTreeSet::new(),
            resolver: None,
            aurora: None,
            options,
            moto: None,
            secret_arn: String::new(),
            db_password: hex_token(),
            start_time: Duration::ZERO,
            phases: Vec::new(),
            _lock: lock,
        };
        let mut phase = Instant::now();
        let mut mark = |twin: &mut Self, name: &'static str| {
            twin.phases.push((name, phase.elapsed()));
            phase = Instant::now();
        };
        twin.build_network()?;
        mark(&mut twin, "network (namespaces, links, routes, nftables)");
        twin.start_resolver()?;
        mark(&mut twin, "resolver (Unbound, dnsmasq)");
        // moto takes ~2 s to boot: Aurora starts meanwhile.
        twin.spawn_secrets_manager()?;
        twin.start_aurora()?;
        mark(&mut twin, "Aurora (writer and reader, TLS)");
        twin.await_secrets_manager()?;
        mark(&mut twin, "Secrets Manager (moto, TLS) and the secret");
        for number in 1..=twin.topology.desired_tasks {
            twin.start_task(number)?;
            twin.register(number)?;
        }
        mark(&mut twin, "tasks");
        twin.start_frontend()?;
        mark(&mut twin, "frontend (healthy, first database connection tried)");
        twin.start_time = started.elapsed();
        Ok(twin)
    }

    // ------------------------------------------------------------------ network

    fn add_namespace(&mut self, name: &str) -> Result<()> {
        ns::run("ip", &["netns", "add", name]).with_context(|| {
            format!(
                "creating network namespace {name}: the twin needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN \
                 (a container must be privileged, or allow unshare/mount and netlink)"
            )
        })?;
        self.namespaces.push(name.to_owned());
        // Forwarding hosts need loose reverse-path checks (replies come back another way).
        ns::sysctl(
            name,
            &[
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.default.send_redirects", "0"),
            ],
        )?;
        ns::ip_batch(name, &["link set lo up".to_owned()])
    }

    fn build_network(&mut self) -> Result<()> {
        let topology = self.topology.clone();
        self.add_namespace(ROUTER)?;
        ns::sysctl(ROUTER, &[("net.ipv4.ip_forward", "1")])?;
        let internet = topology.host("internet").namespace();
        self.add_namespace(&internet)?;

        let mut router = Vec::new();
        for subnet in &topology.vpc.subnets {
            let bridge = bridge_name(&subnet.name);
            // A MAC of its own: a bridge otherwise takes the lowest MAC of its ports, so an ENI
            // joining the subnet could change the router's MAC under its hosts' ARP caches and
            // black-hole their routed traffic until they ask again (seen as a task unreachable
            // from App Runner for minutes after another task started in the connector's subnet).
            let [a, b, c, d] = subnet.router().octets();
            router.push(format!(
                "link add {bridge} address 02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x} type bridge"
            ));
            router.push(format!(
                "addr add {}/{} dev {bridge}",
                subnet.router(),
                subnet.cidr.prefix_len()
            ));
            router.push(format!("link set {bridge} up"));
        }
        // The internet gateway: a link from the router to `internet`.
        router.push(format!(
            "link add {IGW_IF} type veth peer name {IGW_IF} netns {internet}"
        ));
        router.push(format!("addr add {INTERNET_GATEWAY}/24 dev {IGW_IF}"));
        router.push(format!("link set {IGW_IF} up"));
        router.push(format!("route add default via {INTERNET_HOST} dev {IGW_IF}"));
        // Route tables of the private subnets: the VPC locally, 0.0.0.0/0 to their NAT gateway
        // (or nowhere: a blackhole drops silently, as a missing route does in AWS).
        for subnet in topology
            .vpc
            .subnets
            .iter()
            .filter(|subnet| subnet.kind != SubnetKind::Public)
        {
            let table = 100 + subnet.az * 10 + usize::from(subnet.kind == SubnetKind::Isolated);
            router.push(format!(
                "rule add from {} to {} lookup main pref 100",
                subnet.cidr, topology.vpc.cidr
            ));
            router.push(format!("rule add from {} lookup {table} pref 200", subnet.cidr));
            match (subnet.kind, topology.nat_for(subnet)) {
                (SubnetKind::Private, Some(nat)) => {
                    let nat_subnet = topology.subnet(nat.subnet.as_deref().unwrap_or_default());
                    router.push(format!(
                        "route add default via {} dev {} table {table}",
                        nat.address,
                        bridge_name(&nat_subnet.name)
                    ));
                }
                _ => router.push(format!("route add blackhole default table {table}")),
            }
        }

        // Hosts in the VPC.
        let mut hosts = Vec::new();
        for host in &topology.hosts {
            match host.kind {
                HostKind::Internet => continue,
                // Tasks are made when ECS starts them.
                HostKind::Task(_) => continue,
                _ => {}
            }
            self.add_namespace(&host.namespace())?;
            hosts.push(host.clone());
        }
        for host in &hosts {
            router.extend(self.attach_commands(&host.name)?);
        }
        ns::ip_batch(ROUTER, &router)?;
        for host in &hosts {
            ns::ip_batch(&host.namespace(), &self.host_commands(&host.name))?;
        }

        // `internet`: its address on the gateway link (every public address, the load
        // balancer's and the tasks', is behind the gateway).
        ns::ip_batch(
            &internet,
            &[
                format!("addr add {INTERNET_HOST}/24 dev {IGW_IF}"),
                format!("link set {IGW_IF} up"),
                format!("route add default via {INTERNET_GATEWAY}"),
            ],
        )?;
        match topology.platform {
            // App Runner's public endpoint is outside the VPC: a link of its own to `internet`.
            Platform::AppRunner { .. } => {
                let apprunner = topology.frontend().namespace();
                ns::ip_batch(
                    &internet,
                    &[
                        format!("link add ar0 type veth peer name {PUBLIC_ENDPOINT_IF} netns {apprunner}"),
                        format!("addr add {APP_RUNNER_CLIENT_SIDE}/24 dev ar0"),
                        "link set ar0 up".to_owned(),
                    ],
                )?;
                ns::ip_batch(
                    &apprunner,
                    &[
                        format!("addr add {APP_RUNNER_ENDPOINT}/24 dev {PUBLIC_ENDPOINT_IF}"),
                        format!("link set {PUBLIC_ENDPOINT_IF} up"),
                    ],
                )?;
            }
            // The load balancer node forwards what its listener takes to the task.
            Platform::Express { .. } => {
                if let Some(alb) = topology.load_balancer() {
                    ns::sysctl(&alb.namespace(), &[("net.ipv4.ip_forward", "1")])?;
                    ns::nft(&alb.namespace(), &firewall::load_balancer(&topology, alb))?;
                }
            }
        }

        for nat in topology.hosts.iter().filter(|host| host.kind == HostKind::Nat) {
            ns::sysctl(&nat.namespace(), &[("net.ipv4.ip_forward", "1")])?;
            ns::nft(&nat.namespace(), &firewall::nat_gateway(&topology))?;
        }
        ns::nft(ROUTER, &firewall::vpc_router(&topology))?;
        self.apply_security_groups()?;

        // Every VPC host asks the VPC resolver, and only it (tasks: when they start).
        // `internet` has no resolver: the machine's own is unreachable from there and lookups
        // would wait for timeouts, so a refused local one makes them fail at once.
        for host in topology
            .hosts
            .iter()
            .filter(|host| !matches!(host.kind, HostKind::Task(_)))
        {
            write_resolv_conf(&topology, &host.name)?;
        }
        Ok(())
    }

    /// Router-side commands plugging host `name`'s ENI into its subnet's bridge.
    fn attach_commands(&self, name: &str) -> Result<Vec<String>> {
        let host = self.topology.host(name);
        let subnet = host
            .subnet
            .as_deref()
            .ok_or_else(|| anyhow!("{name} has no subnet"))?;
        let port = format!("v-{name}");
        Ok(vec![
            format!(
                "link add {port} type veth peer name {ENI} netns {}",
                host.namespace()
            ),
            format!("link set {port} master {} up", bridge_name(subnet)),
        ])
    }

    /// Host-side commands: the ENI's address and the default route via the subnet's router.
    fn host_commands(&self, name: &str) -> Vec<String> {
        let host = self.topology.host(name);
        let subnet = self.topology.subnet(host.subnet.as_deref().unwrap_or_default());
        vec![
            format!("addr add {}/{} dev {ENI}", host.address, subnet.cidr.prefix_len()),
            format!("link set {ENI} up"),
            format!("route add default via {}", subnet.router()),
        ]
    }

    /// The ENIs currently carrying each security group.
    fn members(&self) -> Members {
        let mut members = Members::new();
        for host in &self.topology.hosts {
            let live = match host.kind {
                HostKind::Task(number) => self.tasks.contains_key(&number),
                HostKind::Internet => false,
                _ => true,
            };
            if live {
                for group in &host.groups {
                    let addresses = members.entry(group.clone()).or_default();
                    addresses.push(host.address);
                    // The reader instance's address is the node's too: a member of its groups.
                    if host.kind == HostKind::Aurora {
                        addresses.push(aurora_reader_address(host.address));
                    }
                }
            }
        }
        members
    }

    /// (Re)loads the security groups of every host that exists, with the current members.
    fn apply_security_groups(&self) -> Result<()> {
        let members = self.members();
        for host in self.topology.hosts.iter().filter(|host| !host.groups.is_empty()) {
            if self.namespaces.contains(&host.namespace()) {
                ns::nft(
                    &host.namespace(),
                    &firewall::security_groups(&self.topology, host, &members),
                )?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ resolver

    fn hosts_file(&self) -> PathBuf {
        self.dir.path().join("vpc-names.hosts")
    }

    /// The Cloud Map name's records: one per registered task.
    fn cloud_map_records(&self) -> Vec<(String, Ipv4Addr)> {
        let name = self.topology.cloud_map.fqdn();
        self.registered
            .iter()
            .map(|number| {
                (
                    name.clone(),
                    self.topology.host(&format!("task-{number}")).address,
                )
            })
            .collect()
    }

    fn start_resolver(&mut self) -> Result<()> {
        let topology = &self.topology;
        let (instances, _) = aurora::names(&topology.database.endpoint);
        let aurora_host = topology.host("aurora");
        std::fs::write(
            self.hosts_file(),
            format!(
                "{} {}\n{} {}\n{INTERNET_HOST} {}\n",
                aurora_host.address,
                instances[0],
                aurora_reader_address(aurora_host.address),
                instances[1],
                secrets_manager_host()
            ),
        )?;
        // enableDnsSupport off: nothing answers at base + 2. enableDnsHostnames off: the
        // resolver answers, but not for the private zone (the Cloud Map namespace).
        if !topology.vpc.dns_support {
            return Ok(());
        }
        let cloud_map_records = self.cloud_map_records();
        let private_zone = topology.vpc.private_zones_resolve().then(|| {
            (
                PrivateZone {
                    name: topology.cloud_map.namespace.clone(),
                    negative_ttl: topology.cloud_map.negative_ttl,
                    record_ttl: topology.cloud_map.ttl,
                },
                cloud_map_records.as_slice(),
            )
        });
        let resolver = topology.host("resolver");
        self.resolver = Some(Resolver::start(
            &resolver.namespace(),
            resolver.address,
            self.dir.path(),
            topology.cloud_map.ttl,
            vec![self.hosts_file()],
            &self.endpoint_records(&instances[0], &instances[1]),
            private_zone,
        )?);
        Ok(())
    }

    /// Aurora's cluster and reader endpoints as CNAMEs to their instances.
    fn endpoint_records(&self, writer: &str, reader: &str) -> Vec<Cname> {
        let endpoint = &self.topology.database.endpoint;
        let (_, reader_endpoint) = aurora::names(endpoint);
        [(endpoint.clone(), writer), (reader_endpoint, reader)]
            .into_iter()
            .map(|(alias, target)| Cname {
                alias,
                target: target.to_owned(),
                ttl: aurora::ENDPOINT_TTL,
            })
            .collect()
    }

    fn resolver(&mut self) -> Result<&mut Resolver> {
        self.resolver.as_mut().ok_or_else(|| {
            anyhow!(
                "the resolver is not running (the VPC's enableDnsSupport is off, or the twin is stopping)"
            )
        })
    }

    /// Registers task `number`'s address under the Cloud Map name (as ECS does when it starts).
    pub fn register(&mut self, number: usize) -> Result<()> {
        self.registered.insert(number);
        self.reload_cloud_map()
    }

    /// Removes task `number`'s record (as ECS does when it stops the task).
    pub fn deregister(&mut self, number: usize) -> Result<()> {
        self.registered.remove(&number);
        self.reload_cloud_map()
    }

    fn reload_cloud_map(&mut self) -> Result<()> {
        let records = self.cloud_map_records();
        match &mut self.resolver {
            Some(resolver) => resolver.set_zone_records(&records),
            // enableDnsSupport off: no resolver to tell.
            None => Ok(()),
        }
    }

    // ------------------------------------------------------------------ Secrets Manager

    fn spawn_secrets_manager(&mut self) -> Result<()> {
        let (cert, key) = self
            .ca
            .issue(&[&secrets_manager_host(), &INTERNET_HOST.to_string()])?;
        let cert_path = self.dir.path().join("secretsmanager.crt");
        let key_path = self.dir.path().join("secretsmanager.key");
        std::fs::write(&cert_path, cert)?;
        std::fs::write(&key_path, key)?;
        let moto_dir = self.dir.path().join("moto");
        std::fs::create_dir_all(&moto_dir)?;
        let program = moto_server()?;
        let internet = self.topology.host("internet").namespace();
        let moto = NsProcess::spawn(
            "moto_server",
            &internet,
            &program,
            &[
                "-H",
                &INTERNET_HOST.to_string(),
                "-p",
                "443",
                "-c",
                &cert_path.display().to_string(),
                "-k",
                &key_path.display().to_string(),
            ],
            &[],
            self.dir.path().join("moto.log"),
        )?;
        self.moto = Some(moto);
        Ok(())
    }

    fn await_secrets_manager(&mut self) -> Result<()> {
        let mut moto = self.moto.take().ok_or_else(|| anyhow!("moto was not started"))?;
        let internet = self.topology.host("internet").namespace();
        let addr = SocketAddr::from((INTERNET_HOST, 443));
        wait_for("moto listening on 443", STARTUP_WAIT, || {
            moto.check_running()?;
            Ok(
                (ns::tcp_connect(&internet, addr, Duration::from_millis(200))? == ns::Connect::Connected)
                    .then_some(()),
            )
        })?;
        wait_for("moto answering Secrets Manager calls", STARTUP_WAIT, || {
            moto.check_running()?;
            Ok(self
                .secrets_call_within("ListSecrets", &json!({}), Duration::from_secs(10))
                .ok()
                .map(|_| ()))
        })?;
        self.moto = Some(moto);
        let secret = json!({
            "username": self.topology.database.master_username,
            "password": self.db_password,
        });
        let answer = self.secrets_call(
            "CreateSecret",
            &json!({"Name": "rds!cluster-0123abcd-avt", "SecretString": secret.to_string()}),
        )?;
        self.secret_arn = answer["ARN"]
            .as_str()
            .ok_or_else(|| anyhow!("CreateSecret answered without an ARN: {answer}"))?
            .to_owned();
        Ok(())
    }

    /// A Secrets Manager call from `internet`, over TLS to the stand-in (test CA).
    pub fn secrets_call(&self, action: &str, request: &Value) -> Result<Value> {
        self.secrets_call_within(action, request, Duration::from_secs(5))
    }

    fn secrets_call_within(&self, action: &str, request: &Value, timeout: Duration) -> Result<Value> {
        let ca = self.ca_pem.clone();
        let body = request.to_string();
        let action = action.to_owned();
        in_namespace(
            &self.topology.host("internet").namespace(),
            move || -> Result<Value> {
                let certificate = ureq::tls::Certificate::from_pem(ca.as_bytes())?;
                let tls = ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::Rustls)
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[certificate]))
                    .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .build();
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .tls_config(tls)
                    .http_status_as_error(false)
                    .timeout_global(Some(timeout))
                    .build()
                    .into();
                let mut response = agent
                    .post(format!("https://{INTERNET_HOST}/"))
                    .header("X-Amz-Target", format!("secretsmanager.{action}"))
                    .header("Content-Type", "application/x-amz-json-1.1")
                    .header("Authorization", harness::moto::AUTHORIZATION)
                    .send(body)?;
                let status = response.status();
                let text = response.body_mut().read_to_string()?;
                if !status.is_success() {
                    bail!("secretsmanager.{action} answered {status}: {text}");
                }
                Ok(serde_json::from_str(&text)?)
            },
        )?
    }

    /// Stores a new current value of the database secret, as a rotation does.
    pub fn rotate_secret(&mut self, new_password: &str) -> Result<()> {
        let secret = json!({
            "username": self.topology.database.master_username,
            "password": new_password,
        });
        self.secrets_call(
            "PutSecretValue",
            &json!({"SecretId": self.secret_arn, "SecretString": secret.to_string()}),
        )?;
        self.db_password = new_password.to_owned();
        Ok(())
    }

    // ------------------------------------------------------------------ Aurora

    fn start_aurora(&mut self) -> Result<()> {
        let host = self.topology.host("aurora");
        let namespace = host.namespace();
        let subnet = self.topology.subnet(host.subnet.as_deref().unwrap_or_default());
        let reader = aurora_reader_address(host.address);
        // The reader instance's address on the same ENI (the node stands for both instances).
        ns::ip_batch(
            &namespace,
            &[format!(
                "addr add {reader}/{} dev {ENI}",
                subnet.cidr.prefix_len()
            )],
        )?;
        let endpoint = &self.topology.database.endpoint;
        let (instances, reader_endpoint) = aurora::names(endpoint);
        let tls = self.ca.issue(&[
            endpoint.as_str(),
            reader_endpoint.as_str(),
            instances[0].as_str(),
            instances[1].as_str(),
        ])?;
        self.aurora = Some(Aurora::start(AuroraSpec {
            namespace,
            dir: self.dir.path().join("aurora"),
            database: &self.topology.database,
            addresses: [host.address, reader],
            tls,
            master_password: &self.db_password,
            lifecycle: self.options.lifecycle,
        })?);
        Ok(())
    }

    fn aurora(&mut self) -> Result<&mut Aurora> {
        self.aurora
            .as_mut()
            .ok_or_else(|| anyhow!("Aurora is not running"))
    }

    /// Runs `f` with a superuser client on Aurora's writer (over its unix socket, outside any
    /// network), in the program's database.
    pub fn admin<T: Send>(&self, f: impl FnOnce(&mut postgres::Client) -> Result<T> + Send) -> Result<T> {
        self.aurora
            .as_ref()
            .ok_or_else(|| anyhow!("Aurora is not running"))?
            .admin(&self.topology.database.name, f)
    }

    /// `aws rds failover-db-cluster`: the writer restarts as the reader of the promoted reader,
    /// and the cluster endpoint's record moves to it. Returns when the record moved: clients
    /// that resolved it before may reach the old writer for up to its TTL.
    pub fn aurora_failover(&mut self) -> Result<Instant> {
        let mut aurora = self
            .aurora
            .take()
            .ok_or_else(|| anyhow!("Aurora is not running"))?;
        let mut moved = None;
        let result = aurora.failover(|writer| {
            self.point_cluster_endpoint_at(writer)?;
            moved = Some(Instant::now());
            Ok(())
        });
        self.aurora = Some(aurora);
        result?;
        moved.ok_or_else(|| anyhow!("the failover did not move the record"))
    }

    /// Moves the cluster endpoint's record to instance `writer` (and the reader endpoint's to
    /// the other), nothing else: what a failover does to DNS. On its own, a fault: the record
    /// names an instance that may not be the writer.
    pub fn point_cluster_endpoint_at(&mut self, writer: &str) -> Result<()> {
        let records = self.endpoint_records(writer, &self.aurora_reader_name(writer));
        self.resolver()?.set_cnames(&records)
    }

    /// The two instances' names (the first writes when the twin starts).
    pub fn aurora_instance_names(&self) -> [String; 2] {
        aurora::names(&self.topology.database.endpoint).0
    }

    /// The instance name that is not `writer`.
    fn aurora_reader_name(&self, writer: &str) -> String {
        let (instances, _) = aurora::names(&self.topology.database.endpoint);
        instances
            .into_iter()
            .find(|name| name != writer)
            .unwrap_or_default()
    }

    /// `aws rds reboot-db-instance` of the writer.
    pub fn aurora_reboot(&mut self) -> Result<()> {
        self.aurora()?.reboot()
    }

    /// The writer drops off the network without a reset.
    pub fn aurora_vanish(&mut self) -> Result<()> {
        self.aurora()?.vanish()
    }

    /// The vanished writer is back on the network.
    pub fn aurora_restore(&mut self) -> Result<()> {
        self.aurora()?.restore()
    }

    /// Aurora's pause and resume now.
    pub fn aurora_lifecycle(&self) -> harness::Lifecycle {
        self.options.lifecycle
    }

    /// Changes Aurora's pause and resume.
    pub fn set_aurora_lifecycle(&mut self, lifecycle: harness::Lifecycle) -> Result<()> {
        self.aurora()?.set_lifecycle(lifecycle);
        self.options.lifecycle = lifecycle;
        Ok(())
    }

    /// Who writes, who reads, paused or not.
    pub fn aurora_status(&self) -> String {
        self.aurora
            .as_ref()
            .map_or_else(|| "Aurora is not running".to_owned(), Aurora::status)
    }

    /// Whether the writer has paused, its open connections and how often it resumed.
    pub fn aurora_writer(&self) -> Option<&harness::AuroraEndpoint> {
        self.aurora.as_ref().map(Aurora::writer_endpoint)
    }

    /// The IPv4 addresses `name` resolves to from `node`, through the VPC resolver as the
    /// node's programs resolve it (`getent ahostsv4` under `ip netns exec`, which gives the node
    /// its resolv.conf).
    /// No address: getent found none (exit status 2: no such name, or no answer at all).
    pub fn resolve(&self, node: &str, name: &str) -> Result<Vec<Ipv4Addr>> {
        let namespace = self.topology.host(node).namespace();
        let output = Command::new("ip")
            .args(["netns", "exec", &namespace, "getent", "ahostsv4", name])
            .stdin(Stdio::null())
            .output()
            .context("running getent under ip netns exec")?;
        match output.status.code() {
            Some(0) => {}
            Some(2) => return Ok(Vec::new()),
            _ => bail!(
                "getent ahostsv4 {name} on {node} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
        let mut addresses: Vec<Ipv4Addr> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next()?.parse().ok())
            .collect();
        addresses.dedup();
        Ok(addresses)
    }

    /// Every stored User-Agent (for request-by-request accounting).
    pub fn stored_user_agents(&self) -> Result<Vec<Option<String>>> {
        self.admin(|client| {
            // No table yet: the frontend never reached the database (migrations run on connect).
            let exists: bool = client
                .query_one("SELECT to_regclass('public.access') IS NOT NULL", &[])?
                .get(0);
            if !exists {
                return Ok(Vec::new());
            }
            Ok(client
                .query("SELECT user_agent FROM access", &[])?
                .iter()
                .map(|row| row.get::<_, Option<String>>(0))
                .collect())
        })
    }

    /// Ends every session the frontend holds (so its pool must open new connections).
    pub fn end_frontend_sessions(&self) -> Result<i64> {
        self.admin(|client| {
            Ok(client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'frontend'",
                    &[],
                )?
                .get(0))
        })
    }

    /// Changes the database password of the master user (the database side of a rotation).
    pub fn set_db_password(&self, password: &str) -> Result<()> {
        let sql = format!(
            "ALTER ROLE \"{}\" PASSWORD '{password}'",
            self.topology.database.master_username
        );
        self.admin(move |client| Ok(client.batch_execute(&sql)?))
    }

    // ------------------------------------------------------------------ ECS tasks

    /// Starts task `number` (its namespace, ENI, security groups, metadata endpoint and the
    /// private service) and adds it to its security groups. Cloud Map: see [`register`](Self::register).
    pub fn start_task(&mut self, number: usize) -> Result<()> {
        let name = format!("task-{number}");
        let host = self.topology.host(&name).clone();
        let namespace = host.namespace();
        if !self.namespaces.contains(&namespace) {
            self.add_namespace(&namespace)?;
            ns::ip_batch(ROUTER, &self.attach_commands(&name)?)?;
            ns::ip_batch(&namespace, &self.host_commands(&name))?;
            write_resolv_conf(&self.topology, &name)?;
        }
        // A task id unique per twin run and task, in the 32-hex-digit form ECS uses.
        let id = format!(
            "{:032x}",
            0xa57_0000_u128 + number as u128 + (u128::from(std::process::id()) << 32)
        );
        let arn = format!("arn:aws:ecs:{REGION}:111122223333:task/demo/{id}");
        let mut document = harness::ecs_task_metadata_fixture()?;
        document["TaskARN"] = json!(arn);
        document["Containers"][0]["Networks"][0]["IPv4Addresses"] = json!([host.address.to_string()]);
        document["Containers"][0]["Labels"]["com.amazonaws.ecs.task-arn"] = json!(arn);
        document["AvailabilityZone"] = json!(format!(
            "{REGION}{}",
            ['a', 'b', 'c', 'd', 'e', 'f'][(number - 1) % 6]
        ));
        let metadata = in_namespace(&namespace, move || harness::EcsMetadata::serving(document))??;
        let process = NsProcess::spawn(
            &format!("private-service ({name})"),
            &namespace,
            &harness::binary("private-service")?,
            &[],
            &[
                ("PORT".to_owned(), "8080".to_owned()),
                (
                    "ECS_CONTAINER_METADATA_URI_V4".to_owned(),
                    metadata.uri_v4().to_owned(),
                ),
            ],
            self.dir.path().join(format!("{name}.log")),
        )?;
        self.tasks.insert(
            number,
            Task {
                process,
                _metadata: metadata,
                arn,
            },
        );
        let url = format!("http://{}:8080/health", host.address);
        let namespace_for_probe = namespace.clone();
        wait_for(&format!("{name} healthy"), STARTUP_WAIT, || {
            if let Some(task) = self.tasks.get_mut(&number) {
                task.process.check_running()?;
            }
            Ok(http_get(&namespace_for_probe, &url, Duration::from_secs(1))
                .ok()
                .filter(|answer| answer.status == 200)
                .map(|_| ()))
        })?;
        self.apply_security_groups()
    }

    /// Stops task `number` as ECS does: its process ends, its ENI leaves the security groups.
    pub fn stop_task(&mut self, number: usize) -> Result<()> {
        let mut task = self
            .tasks
            .remove(&number)
            .ok_or_else(|| anyhow!("task-{number} is not running"))?;
        task.process.kill();
        drop(task);
        self.apply_security_groups()
    }

    /// Begins stopping task `number` as ECS stops a task a deployment replaces: deregistered
    /// from Cloud Map and sent SIGTERM at once; the service answers through its linger.
    pub fn begin_task_stop(&mut self, number: usize) -> Result<()> {
        self.deregister(number)?;
        self.tasks
            .get(&number)
            .ok_or_else(|| anyhow!("task-{number} is not running"))?
            .process
            .signal(nix::sys::signal::Signal::SIGTERM)
    }

    /// Waits for task `number` to exit after [`begin_task_stop`](Self::begin_task_stop), up to
    /// the program's stopTimeout (then SIGKILL, as ECS), and takes its ENI out of the groups.
    pub fn finish_task_stop(&mut self, number: usize) -> Result<()> {
        let stop_timeout = self.topology.task_stop_timeout;
        let task = self
            .tasks
            .get_mut(&number)
            .ok_or_else(|| anyhow!("task-{number} is not running"))?;
        let exited = task.process.wait_exit(stop_timeout)?;
        self.stop_task(number)?;
        if !exited {
            bail!("task-{number} did not exit within the stopTimeout ({stop_timeout:?}) of SIGTERM: killed");
        }
        Ok(())
    }

    /// The task ARN task `number` reports.
    pub fn task_arn(&self, number: usize) -> Option<&str> {
        self.tasks.get(&number).map(|task| task.arn.as_str())
    }

    // ------------------------------------------------------------------ frontend

    /// The environment the program gives the frontend (App Runner's or Express Mode's), with the twin's values
    /// for the references, plus static test credentials and the test CA.
    pub fn frontend_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .topology
            .env
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Env::Text(text) => text.clone(),
                    Env::DbEndpoint => self.topology.database.endpoint.clone(),
                    Env::DbPort => self.topology.database.port.to_string(),
                    Env::DbName => self.topology.database.name.clone(),
                    Env::DbSecretArn => self.secret_arn.clone(),
                };
                (key.clone(), value)
            })
            .collect();
        let ca = self.ca_path.display().to_string();
        env.extend(
            [
                ("PORT", self.topology.service_port.to_string()),
                // verify-full against the test CA instead of the built-in RDS bundle.
                ("DB_SSLROOTCERT", ca.clone()),
                // The SDK's native roots: the test CA signed the Secrets Manager stand-in.
                ("SSL_CERT_FILE", ca),
                ("AWS_REGION", REGION.to_owned()),
                ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
                ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
                ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
                ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
                ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
            ]
            .map(|(key, value)| (key.to_owned(), value)),
        );
        env.extend(FRONTEND_EXTRA_ENV.map(|(key, value)| (key.to_owned(), value.to_owned())));
        // The options' values replace the defaults'.
        env.retain(|(key, _)| !self.options.frontend_env.iter().any(|(option, _)| option == key));
        env.extend(self.options.frontend_env.iter().cloned());
        env
    }

    fn start_frontend(&mut self) -> Result<()> {
        let env = self.frontend_env();
        let mut frontend = NsProcess::spawn(
            "frontend",
            &self.topology.frontend().namespace(),
            &harness::binary("frontend")?,
            &[],
            &env,
            self.dir.path().join("frontend.log"),
        )?;
        let url = self.url("/health");
        let internet = self.topology.host("internet").namespace();
        wait_for("the frontend healthy from internet", STARTUP_WAIT, || {
            frontend.check_running()?;
            Ok(http_get(&internet, &url, Duration::from_secs(1))
                .ok()
                .filter(|answer| answer.status == 200)
                .map(|_| ()))
        })?;
        // Healthy is not ready: the frontend opens its first database connection in the
        // background (secret through NAT, TLS, SCRAM, migrations). A visit racing that on a
        // loaded machine can outlast the 2 s acquire timeout, so wait for its outcome, logged
        // either way by `Database::warm_up` (crates/frontend/src/db/mod.rs); a mutated program
        // makes it fail, which is what those tests then observe.
        wait_for(
            "the frontend's first database connection (or its failure)",
            STARTUP_WAIT,
            || {
                frontend.check_running()?;
                let logs = frontend.logs();
                Ok((logs.contains("database reachable, schema up to date")
                    || logs.contains("database not reachable yet"))
                .then_some(()))
            },
        )?;
        self.frontend = Some(frontend);
        Ok(())
    }

    /// The frontend's process id (a restart would change it).
    pub fn frontend_pid(&self) -> Option<u32> {
        self.frontend.as_ref().and_then(NsProcess::pid)
    }

    /// What the frontend has logged so far.
    pub fn frontend_logs(&self) -> String {
        self.frontend.as_ref().map(NsProcess::logs).unwrap_or_default()
    }

    /// The service URL as called from `internet`: App Runner's public endpoint, or the
    /// listener of Express Mode's load balancer (plain HTTP on its port: TLS is not modelled).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    /// The service's public address (for load generators in `internet`).
    pub fn public_addr(&self) -> SocketAddr {
        self.public
    }

    /// `GET path` from `internet`.
    pub fn get(&self, path: &str) -> Result<Answer> {
        http_get(
            &self.topology.host("internet").namespace(),
            &self.url(path),
            Duration::from_secs(15),
        )
    }

    /// The address a node is reached at by `from` ([`Topology::address_seen_from`]).
    pub fn address_of(&self, from: &str, node: &str) -> Ipv4Addr {
        self.topology.address_seen_from(from, node)
    }

    /// A TCP connect from node `from` to `to:port`.
    pub fn connect(&self, from: &str, to: &str, port: u16, timeout: Duration) -> Result<ns::Connect> {
        let addr = SocketAddr::from((self.address_of(from, to), port));
        ns::tcp_connect(&self.topology.host(from).namespace(), addr, timeout)
    }

    /// Every path of [`reach::standard_probes`] tried for real (TCP connect, all at once, each
    /// given [`NO_ANSWER_AFTER`]): the table (expected, observed, deciding rule) and the paths
    /// where the network disagrees with the program's verdict. "Blocked" must be no answer at
    /// all, as in AWS. "Open" must connect; to `internet` a refusal counts too: the SYN reached
    /// the host and its reset came back, so the path is open, and what listens on the
    /// internet is not the program's business (only moto's 443 does).
    pub fn matrix(&self) -> Result<(String, Vec<String>)> {
        let paths: Vec<reach::Path> = reach::standard_probes(&self.topology)
            .into_iter()
            .filter(|(from, to, _)| self.is_up(from) && self.is_up(to))
            .map(|(from, to, port)| reach::analyze(&self.topology, &from, &to, port))
            .collect();
        let observed: Vec<Result<ns::Connect>> = std::thread::scope(|scope| {
            let probes: Vec<_> = paths
                .iter()
                .map(|path| {
                    scope.spawn(move || self.connect(&path.from, &path.to, path.port, NO_ANSWER_AFTER))
                })
                .collect();
            probes
                .into_iter()
                .map(|probe| probe.join().unwrap_or_else(|_| Err(anyhow!("a probe panicked"))))
                .collect()
        });
        let mut rows = Vec::new();
        let mut mismatches = Vec::new();
        for (path, observed) in paths.into_iter().zip(observed) {
            let observed = observed?;
            let label = match &observed {
                ns::Connect::Connected => "connected".to_owned(),
                ns::Connect::NoAnswer => "no answer".to_owned(),
                ns::Connect::Refused => "refused".to_owned(),
                ns::Connect::Other(error) => error.clone(),
            };
            let to_internet = self.topology.host(&path.to).kind == HostKind::Internet;
            let agrees = match (path.verdict, &observed) {
                (reach::Verdict::Open, ns::Connect::Connected) => true,
                (reach::Verdict::Open, ns::Connect::Refused) => to_internet,
                (reach::Verdict::Blocked, ns::Connect::NoAnswer) => true,
                _ => false,
            };
            if !agrees {
                mismatches.push(format!(
                    "{} → {}:{}: the program says {:?} ({}), the network gave {label}",
                    path.from, path.to, path.port, path.verdict, path.because
                ));
            }
            rows.push((path, Some(label)));
        }
        Ok((reach::table(&rows), mismatches))
    }

    /// Whether a node exists right now (tasks come and go).
    fn is_up(&self, node: &str) -> bool {
        match self.topology.host(node).kind {
            HostKind::Task(number) => self.tasks.contains_key(&number),
            _ => true,
        }
    }

    /// The namespace of a node (for `ip netns exec <ns> bash`).
    pub fn namespace_of(&self, node: &str) -> String {
        self.topology.host(node).namespace()
    }

    /// Logs of the twin's processes (for failure messages).
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for process in self
            .frontend
            .iter()
            .chain(self.tasks.values().map(|task| &task.process))
            .chain(self.resolver.iter().flat_map(Resolver::processes))
            .chain(&self.moto)
        {
            out.push_str(&format!(
                "---- {} ----\n{}\n",
                process.name,
                harness::last_lines(&process.logs(), 40)
            ));
        }
        out
    }

    /// Stops everything and removes every namespace; returns how long that took. Checks, with
    /// the machine-wide lock still held (so no other twin has made namespaces of the same names
    /// yet), that none of its namespaces is left.
    pub fn stop(mut self) -> Result<Duration> {
        let started = Instant::now();
        let made = self.namespaces.clone();
        self.teardown()?;
        let took = started.elapsed();
        let listed = ns::run("ip", &["netns", "list"])?;
        let left: Vec<&str> = listed
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| made.iter().any(|made| made == name))
            .collect();
        if !left.is_empty() {
            bail!("namespaces left behind after stopping: {}", left.join(", "));
        }
        Ok(took)
    }

    fn teardown(&mut self) -> Result<()> {
        self.frontend.take();
        self.tasks.clear();
        self.resolver.take();
        self.moto.take();
        // Before its namespace goes: PostgreSQL killed with SIGKILL (what deleting a namespace
        // does to the processes in it) leaves its shared memory behind, in /dev/shm and as a
        // System V segment, one set per run.
        if let Some(mut aurora) = self.aurora.take() {
            aurora.stop();
        }
        let mut errors = Vec::new();
        for namespace in self.namespaces.drain(..).rev() {
            if let Err(error) = ns::delete_namespace(&namespace) {
                errors.push(format!("{namespace}: {error:#}"));
            }
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&namespace));
        }
        for host in &self.topology.hosts {
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(host.namespace()));
        }
        if !errors.is_empty() {
            bail!("removing the twin's namespaces: {}", errors.join("; "));
        }
        Ok(())
    }
}

impl Drop for Twin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("vpc-twin: logs at the failure:\n{}", self.all_logs());
        }
        if let Err(error) = self.teardown() {
            eprintln!("vpc-twin: {error:#}");
        }
    }
}

/// An HTTP answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }

    /// An RFC 9457 problem whose `status` member is the status.
    pub fn is_problem(&self) -> bool {
        self.content_type.starts_with("application/problem+json")
            && self.json().is_ok_and(|body| body["status"] == json!(self.status))
    }
}

/// `GET url` from namespace `ns`.
pub fn http_get(ns: &str, url: &str, timeout: Duration) -> Result<Answer> {
    let url = url.to_owned();
    in_namespace(ns, move || -> Result<Answer> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        let mut response = agent.get(&url).header("User-Agent", "vpc-twin/1").call()?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.body_mut().read_to_string()?;
        Ok(Answer {
            status,
            content_type,
            body,
        })
    })?
}

/// `/etc/netns/<namespace>/resolv.conf`, which `ip netns exec` mounts over `/etc/resolv.conf`.
fn write_resolv_conf(topology: &Topology, node: &str) -> Result<()> {
    let host = topology.host(node);
    let resolver = match host.kind {
        HostKind::Internet => Ipv4Addr::LOCALHOST,
        _ => topology.vpc.resolver(),
    };
    let dir = Path::new("/etc/netns").join(host.namespace());
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("resolv.conf"),
        format!("nameserver {resolver}\noptions timeout:1 attempts:2\n"),
    )?;
    Ok(())
}

fn bridge_name(subnet: &str) -> String {
    format!("br-{subnet}")
}

fn hex_token() -> String {
    let mut bytes = [0_u8; 16];
    if let Ok(mut file) = File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut file, &mut bytes);
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Aurora of a killed twin: stopped before [`ns::remove_leftovers`] kills it, for the reason
/// in [`Twin::teardown`]. Only the twin's own working directories are looked at.
fn stop_leftover_aurora() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(crate::WORKDIR_PREFIX)
        {
            aurora::stop_all(&entry.path().join("aurora"));
        }
    }
}

/// One twin per machine at a time: an exclusive lock held for the twin's lifetime (a second
/// run waits), so a run's leftover cleanup never hits another running twin.
fn take_lock() -> Result<nix::fcntl::Flock<File>> {
    let path = Path::new("/run/lock/avt-vpc-twin.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| anyhow!("locking {}: {errno}", path.display()))
}

fn moto_server() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let venv = harness::workspace_root().join(".venv/bin/moto_server");
    if venv.exists() {
        return Ok(venv);
    }
    bail!(
        "moto_server was not found: python3 -m venv .venv && .venv/bin/pip install -r tests/harness/requirements.txt"
    )
}

/// The reader instance's address: the next one after the node's own.
fn aurora_reader_address(writer: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(writer) + 1)
}
