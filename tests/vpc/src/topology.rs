//! The twin's one description of the network, built from the Pulumi program
//! ([`crate::program`]); everything else (namespaces, routes, nftables, DNS, the expected
//! reachability) is derived from it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The address of the `internet` host (TEST-NET-2): the client, and the public AWS endpoints.
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The internet side of the internet gateway (what the NAT gateway's Elastic IP looks like).
pub const INTERNET_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// App Runner's public endpoint for the service (TEST-NET-1), reached from `internet` directly,
/// not through the VPC: inbound requests never enter the VPC.
pub const APP_RUNNER_ENDPOINT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The `internet` end of the link to App Runner's public endpoint.
pub const APP_RUNNER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The public IPv4 addresses the internet gateway maps 1:1 to VPC addresses (TEST-NET-3): a
/// host's is this network's base + the last octet of its VPC address (what an ENI with
/// `assignPublicIp` or an internet-facing load balancer node gets).
pub const PUBLIC_IPV4_POOL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 0);
/// The port of the HTTPS listener ECS Express Mode gives its load balancer.
pub const LISTENER_PORT: u16 = 443;
/// Where AWS documents what ECS Express Mode creates that a program does not declare.
pub const EXPRESS_SOURCE: &str = "ECS developer guide, \"Resources created by Amazon ECS Express Mode services\" \
     (express-service-work.html), \"Network configuration defaults\" and \"Application Load Balancer defaults\"";
/// The VPC's default security group, which AWS puts on an ENI created without a group list
/// (implicit: not a resource of the program).
pub const VPC_DEFAULT_SG: &str = "vpc-default-sg";
/// Where AWS says so.
pub const VPC_DEFAULT_SOURCE: &str = "VPC user guide, \"Default security groups for your VPCs\"; App Runner \
     CreateVpcConnector (SecurityGroups: \"If not specified, App Runner uses the default security group of the Amazon VPC\"); \
     RDS CreateDBCluster (VpcSecurityGroupIds); ECS AwsVpcConfiguration (securityGroups)";
/// Express Mode's security group on its load balancer (implicit: not a resource of the program).
pub const EXPRESS_LB_SG: &str = "express-lb-sg";
/// Express Mode's security group on the service's tasks (implicit: not a resource of the program).
pub const EXPRESS_SERVICE_SG: &str = "express-service-sg";
/// Link-local metadata endpoints (EC2 instance metadata, ECS task metadata).
pub const METADATA_ADDRESSES: [Ipv4Addr; 2] =
    [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(169, 254, 170, 2)];

#[derive(Clone, Debug)]
pub struct Topology {
    pub vpc: Vpc,
    /// Security groups by resource name.
    pub groups: BTreeMap<String, SecurityGroup>,
    pub hosts: Vec<Host>,
    pub nat: NatStrategy,
    /// Where the frontend runs and how the internet reaches it.
    pub platform: Platform,
    /// The frontend's port: App Runner's `imageConfiguration.port`, Express Mode's
    /// `primaryContainer.containerPort`.
    pub service_port: u16,
    pub desired_tasks: usize,
    /// How long ECS waits after a task's SIGTERM before SIGKILL (its container's stopTimeout).
    pub task_stop_timeout: std::time::Duration,
    pub cloud_map: CloudMap,
    pub database: Database,
    /// The frontend's environment: App Runner's `runtimeEnvironmentVariables`, Express Mode's
    /// `primaryContainer.environments`.
    pub env: BTreeMap<String, Env>,
}

#[derive(Clone, Debug)]
pub struct Vpc {
    pub cidr: Ipv4Net,
    pub azs: usize,
    pub subnets: Vec<Subnet>,
    /// `enableDnsSupport`: the Route 53 Resolver answers at base + 2 (EC2's default: true).
    pub dns_support: bool,
    /// `enableDnsHostnames` (EC2's default: false). Private hosted zones — the Cloud Map
    /// namespace — resolve only with both on ("Considerations when working with a private
    /// hosted zone", Route 53 developer guide).
    pub dns_hostnames: bool,
}

impl Vpc {
    /// Whether the Cloud Map namespace's names resolve in the VPC.
    pub fn private_zones_resolve(&self) -> bool {
        self.dns_support && self.dns_hostnames
    }

    /// The Route 53 Resolver ("AmazonProvidedDNS"): the VPC CIDR's base + 2.
    pub fn resolver(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 2)
    }
}

/// The public IPv4 address the twin gives a VPC address (see [`PUBLIC_IPV4_POOL`]).
pub fn public_ipv4_for(address: Ipv4Addr) -> Ipv4Addr {
    let [.., last] = address.octets();
    let [a, b, c, _] = PUBLIC_IPV4_POOL.octets();
    Ipv4Addr::new(a, b, c, last)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SubnetKind {
    Public,
    Private,
    Isolated,
}

impl SubnetKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Isolated => "isolated",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Subnet {
    /// `public-1`, `private-2`, ...: kind and AZ number.
    pub name: String,
    pub kind: SubnetKind,
    pub az: usize,
    pub cidr: Ipv4Net,
}

impl Subnet {
    /// The VPC router's address in this subnet (base + 1, as in AWS).
    pub fn router(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatStrategy {
    None,
    Single,
    OnePerAz,
}

/// The two ways the programs run the frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// `aws:apprunner:Service` outside the VPC: requests come through App Runner's public
    /// endpoint; with egress type VPC, everything it sends leaves through the connector's ENIs.
    AppRunner { egress: EgressType },
    /// `aws:ecs:ExpressGatewayService`: tasks in the VPC behind an Application Load Balancer
    /// that Express Mode creates in the same subnets ([`EXPRESS_SOURCE`]).
    Express { load_balancer: Scheme },
}

/// An Express load balancer's scheme, which the service's subnets decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Public subnets: an internet-facing load balancer, and public IPs on the tasks.
    InternetFacing,
    /// Private subnets: an internal load balancer, reachable from inside the VPC only.
    Internal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressType {
    /// All outbound traffic leaves through the connector's ENIs in the VPC.
    Vpc,
    /// App Runner's own internet access; the VPC is not reachable.
    Default,
}

#[derive(Clone, Debug)]
pub struct SecurityGroup {
    pub name: String,
    pub description: String,
    /// `Some(who)` for a group AWS makes itself that the program does not declare (its name
    /// and its rules' names are the twin's, not resources a reader finds in the program).
    pub made_by: Option<&'static str>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    All,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Cidr(Ipv4Net),
    /// Every ENI that carries this security group.
    Group(String),
}

#[derive(Clone, Debug)]
pub struct Rule {
    /// The resource name in the program (what a reader finds there).
    pub name: String,
    pub description: String,
    pub protocol: Protocol,
    /// Inclusive port range; `None` = all ports.
    pub ports: Option<(u16, u16)>,
    pub peer: Peer,
}

impl Rule {
    pub fn allows_tcp_port(&self, port: u16) -> bool {
        let protocol = matches!(self.protocol, Protocol::Tcp | Protocol::All);
        protocol && self.ports.is_none_or(|(from, to)| (from..=to).contains(&port))
    }

    /// `tcp/5432`, `tcp/1024-2048`, `all`.
    pub fn what(&self) -> String {
        let protocol = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::All => return "all traffic".into(),
        };
        match self.ports {
            None => format!("{protocol}/all"),
            Some((from, to)) if from == to => format!("{protocol}/{from}"),
            Some((from, to)) => format!("{protocol}/{from}-{to}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// The client and the public AWS endpoints (Secrets Manager).
    Internet,
    /// The frontend on App Runner: public endpoint inbound, the VPC connector's ENI outbound.
    AppRunner,
    /// The frontend as an ECS Express Mode task, in the VPC.
    ExpressTask,
    /// A node of Express Mode's Application Load Balancer: its listener forwards to the task.
    LoadBalancer,
    Nat,
    /// The Route 53 Resolver at the VPC base + 2.
    Resolver,
    Aurora,
    /// ECS task number n of the private service.
    Task(usize),
}

#[derive(Clone, Debug)]
pub struct Host {
    /// The node name tests use (`internet`, `apprunner`, `aurora`, `task-1`, ...).
    pub name: String,
    pub kind: HostKind,
    /// The subnet of its VPC interface (`None` for `internet`).
    pub subnet: Option<String>,
    /// Its VPC address (for `apprunner`: the connector ENI's), or its internet address.
    pub address: Ipv4Addr,
    /// The public IPv4 address the internet gateway maps to `address` (an Express task with
    /// `assignPublicIp`, an internet-facing load balancer node); NAT gateways leave as the
    /// gateway's Elastic IP instead and are reachable by replies only.
    pub public_ip: Option<Ipv4Addr>,
    /// Security groups on its VPC interface.
    pub groups: Vec<String>,
}

impl Host {
    /// The network namespace it lives in.
    pub fn namespace(&self) -> String {
        format!("{}{}", crate::PREFIX, self.name)
    }
}

#[derive(Clone, Debug)]
pub struct CloudMap {
    pub namespace: String,
    pub service: String,
    /// TTL of the service's A records.
    pub ttl: u32,
    /// How long a resolver keeps "no such name" (the namespace's SOA TTL; Route 53 takes the
    /// lesser of it and the SOA's minimum, 86400): a name left without tasks stays unknown this
    /// long after a task registers again.
    pub negative_ttl: u32,
}

/// The SOA TTL of a private DNS namespace created without `Properties.DnsProperties.SOA`, the
/// only way pulumi-aws's `aws:servicediscovery:PrivateDnsNamespace` can create one.
pub const CLOUD_MAP_SOA_TTL: u32 = 15;
/// Where that figure comes from.
pub const CLOUD_MAP_SOA_TTL_SOURCE: &str = "Cloud Map CreatePrivateDnsNamespace, \
     PrivateDnsPropertiesMutable.SOA (\"the time to live (TTL) for purposes of negative caching\"), \
     which documents no default; 15 s is what a live namespace created without it answered (a probe \
     published in go-to-k/cdkd), where older reports saw 900 s";

impl CloudMap {
    /// `privateservice.apprunner.demo`
    pub fn fqdn(&self) -> String {
        format!("{}.{}", self.service, self.namespace)
    }
}

#[derive(Clone, Debug)]
pub struct Database {
    /// The cluster endpoint name the VPC resolver answers.
    pub endpoint: String,
    pub port: u16,
    pub name: String,
    pub master_username: String,
    /// Serverless v2's auto-pause after this long without connections (minimum 0 ACU).
    pub auto_pause: Option<std::time::Duration>,
}

/// A frontend environment value as the program declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Env {
    Text(String),
    DbEndpoint,
    DbPort,
    DbName,
    DbSecretArn,
}

/// Where the internet sends requests for the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicEntry {
    /// The node that answers there (`apprunner`, or `alb` whose listener forwards to `frontend`).
    pub node: String,
    pub address: Ipv4Addr,
    pub port: u16,
}

impl Topology {
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| panic!("the topology has no host named {name}"))
    }

    pub fn subnet(&self, name: &str) -> &Subnet {
        self.vpc
            .subnets
            .iter()
            .find(|subnet| subnet.name == name)
            .unwrap_or_else(|| panic!("the topology has no subnet named {name}"))
    }

    /// The NAT host serving a private subnet's AZ, if any.
    pub fn nat_for(&self, subnet: &Subnet) -> Option<&Host> {
        let az = match self.nat {
            NatStrategy::None => return None,
            NatStrategy::Single => 1,
            NatStrategy::OnePerAz => subnet.az,
        };
        self.hosts
            .iter()
            .find(|host| host.kind == HostKind::Nat && host.name == format!("nat-{az}"))
    }

    /// The host the frontend runs on: `apprunner`, or Express Mode's task `frontend`.
    pub fn frontend(&self) -> &Host {
        let kind = match self.platform {
            Platform::AppRunner { .. } => HostKind::AppRunner,
            Platform::Express { .. } => HostKind::ExpressTask,
        };
        self.hosts
            .iter()
            .find(|host| host.kind == kind)
            .unwrap_or_else(|| panic!("the topology has no {kind:?} host"))
    }

    /// Express Mode's load balancer node (`alb`), if the program has one.
    pub fn load_balancer(&self) -> Option<&Host> {
        self.hosts.iter().find(|host| host.kind == HostKind::LoadBalancer)
    }

    /// Where the internet reaches the service: App Runner's public endpoint, or the listener of
    /// an internet-facing load balancer at its public address. `None` for an internal load
    /// balancer (or App Runner without a public endpoint, which the program reader refuses).
    pub fn public_entry(&self) -> Option<PublicEntry> {
        match self.platform {
            Platform::AppRunner { .. } => Some(PublicEntry {
                node: self.frontend().name.clone(),
                address: APP_RUNNER_ENDPOINT,
                port: self.service_port,
            }),
            Platform::Express { .. } => {
                let alb = self.load_balancer()?;
                Some(PublicEntry {
                    node: alb.name.clone(),
                    address: alb.public_ip?,
                    port: LISTENER_PORT,
                })
            }
        }
    }

    /// The address `node` is reached at from `from`: App Runner's public endpoint or a public
    /// IPv4 address from `internet`, else the node's own (VPC) address.
    pub fn address_seen_from(&self, from: &str, node: &str) -> Ipv4Addr {
        let host = self.host(node);
        match (self.host(from).kind, host.kind) {
            (HostKind::Internet, HostKind::AppRunner) => APP_RUNNER_ENDPOINT,
            (HostKind::Internet, _) => host.public_ip.unwrap_or(host.address),
            _ => host.address,
        }
    }

    /// A literal environment value the program gives the frontend (`None` for references).
    pub fn env_text(&self, name: &str) -> Option<&str> {
        match self.env.get(name) {
            Some(Env::Text(text)) => Some(text),
            _ => None,
        }
    }
}
