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
    pub egress: EgressType,
    /// App Runner's `imageConfiguration.port`.
    pub service_port: u16,
    pub desired_tasks: usize,
    pub cloud_map: CloudMap,
    pub database: Database,
    /// `runtimeEnvironmentVariables` of the App Runner service.
    pub env: BTreeMap<String, Env>,
}

#[derive(Clone, Debug)]
pub struct Vpc {
    pub cidr: Ipv4Net,
    pub azs: usize,
    pub subnets: Vec<Subnet>,
}

impl Vpc {
    /// The Route 53 Resolver ("AmazonProvidedDNS"): the VPC CIDR's base + 2.
    pub fn resolver(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 2)
    }
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
    /// The frontend: public endpoint inbound, the VPC connector's ENI outbound.
    AppRunner,
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
}

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
}

/// An App Runner environment value as the program declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Env {
    Text(String),
    DbEndpoint,
    DbPort,
    DbName,
    DbSecretArn,
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

    /// A literal environment value the program gives the frontend (`None` for references).
    pub fn env_text(&self, name: &str) -> Option<&str> {
        match self.env.get(name) {
            Some(Env::Text(text)) => Some(text),
            _ => None,
        }
    }
}
