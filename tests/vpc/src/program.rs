//! Reads the Pulumi YAML program into a [`Topology`]: security groups and their rules, which
//! host carries which group, the VPC's subnets as awsx lays them out, NAT, Cloud Map, the
//! database, and the frontend with its environment: an App Runner service behind its VPC
//! connector (`pulumi/Pulumi.yaml`), or an ECS Express Mode service (`pulumi/ecs-express/`)
//! with what Express Mode creates without the program declaring it (its load balancer and two
//! security groups, see [`crate::topology::EXPRESS_SOURCE`]).
//!
//! Only what the twin needs is read; anything it cannot model faithfully is an error naming
//! the resource, never silently ignored.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use ipnet::Ipv4Net;
use serde_norway::Value;

use crate::topology::{
    CloudMap, Database, EXPRESS_LB_SG, EXPRESS_SERVICE_SG, EXPRESS_SOURCE, EgressType, Env, Host, HostKind,
    LISTENER_PORT, NatStrategy, Peer, Platform, Protocol, Rule, Scheme, SecurityGroup, Subnet, SubnetKind,
    Topology, VPC_DEFAULT_SG, VPC_DEFAULT_SOURCE, Vpc, public_ipv4_for,
};

/// The name the twin's Aurora cluster endpoint has (a cluster-endpoint-style name).
pub const DB_ENDPOINT: &str = "demo.cluster-abc.us-east-1.rds.amazonaws.com";
/// The region of the twin (the Secrets Manager endpoint name follows from it).
pub const REGION: &str = "us-east-1";

/// The App Runner program, relative to the workspace (the default).
pub const APP_RUNNER_PROGRAM: &str = "pulumi/Pulumi.yaml";
/// The ECS Express Mode program, relative to the workspace.
pub const EXPRESS_PROGRAM: &str = "pulumi/ecs-express/Pulumi.yaml";

/// `$PULUMI_PROGRAM` when set, else [`APP_RUNNER_PROGRAM`] of the workspace.
pub fn program_path() -> PathBuf {
    std::env::var_os("PULUMI_PROGRAM")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_program(APP_RUNNER_PROGRAM))
}

/// A program of the workspace by its relative path ([`APP_RUNNER_PROGRAM`], [`EXPRESS_PROGRAM`]).
pub fn workspace_program(relative: &str) -> PathBuf {
    harness::workspace_root().join(relative)
}

/// The topology of the program at [`program_path`].
pub fn load() -> Result<Topology> {
    from_path(&program_path())
}

/// The topology of the program at `path`.
pub fn from_path(path: &std::path::Path) -> Result<Topology> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the Pulumi program {}", path.display()))?;
    from_yaml(&text).with_context(|| format!("reading the topology of {}", path.display()))
}

/// The program's text with resource `name` removed (a mutation for tests).
pub fn without_resource(text: &str, name: &str) -> Result<String> {
    let mut program = parse(text)?;
    let removed = program
        .get_mut("resources")
        .and_then(Value::as_mapping_mut)
        .and_then(|resources| resources.remove(name));
    if removed.is_none() {
        bail!("the program has no resource {name} to remove");
    }
    serde_norway::to_string(&program).context("writing the mutated program")
}

/// The program's text with config `key`'s default set to `value` (a mutation for tests).
pub fn with_config_default(text: &str, key: &str, value: &str) -> Result<String> {
    let mut program = parse(text)?;
    let entry = program
        .get_mut("config")
        .and_then(Value::as_mapping_mut)
        .and_then(|config| config.get_mut(key))
        .ok_or_else(|| anyhow!("the program has no config {key}"))?;
    match entry.as_mapping_mut() {
        Some(spec) => {
            spec.insert("default".into(), Value::String(value.to_owned()));
        }
        None => *entry = Value::String(value.to_owned()),
    }
    serde_norway::to_string(&program).context("writing the mutated program")
}

/// The program's text as a YAML value (for tests that mutate a copy).
pub fn parse(text: &str) -> Result<Value> {
    serde_norway::from_str(text).context("parsing the Pulumi program as YAML")
}

/// The topology of a program given as text.
pub fn from_yaml(text: &str) -> Result<Topology> {
    from_value(&parse(text)?)
}

/// The topology of a parsed program.
pub fn from_value(program: &Value) -> Result<Topology> {
    Program::new(program)?.topology()
}

/// `pkg:mod:Res` and `pkg:mod/res:Res` compared case-insensitively, as pulumi-yaml does.
fn normalize_type(token: &str) -> String {
    let parts: Vec<&str> = token.split(':').collect();
    match parts.as_slice() {
        [pkg, module, res] => {
            let module = module.split('/').next().unwrap_or(module);
            format!("{pkg}:{module}:{res}").to_lowercase()
        }
        _ => token.to_lowercase(),
    }
}

/// `${name}` or `${name.path}`: the inside of a whole-value interpolation.
fn whole_reference(value: &Value) -> Option<&str> {
    let text = value.as_str()?;
    let inner = text.strip_prefix("${")?.strip_suffix('}')?;
    (!inner.contains("${")).then_some(inner)
}

struct Program<'a> {
    config: BTreeMap<String, &'a Value>,
    resources: Vec<(&'a str, String, &'a Value)>,
}

impl<'a> Program<'a> {
    fn new(program: &'a Value) -> Result<Self> {
        let mut config = BTreeMap::new();
        if let Some(entries) = program.get("config").and_then(Value::as_mapping) {
            for (key, value) in entries {
                let key = key
                    .as_str()
                    .ok_or_else(|| anyhow!("a config key is not a string"))?;
                // `{type, default, ...}` or a literal default.
                let default = match value.as_mapping() {
                    Some(spec) if spec.contains_key("type") || spec.contains_key("default") => {
                        spec.get("default")
                    }
                    _ => Some(value),
                };
                if let Some(default) = default {
                    config.insert(key.to_owned(), default);
                }
            }
        }
        let mut resources = Vec::new();
        let entries = program
            .get("resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| anyhow!("the program has no `resources`"))?;
        for (name, resource) in entries {
            let name = name
                .as_str()
                .ok_or_else(|| anyhow!("a resource name is not a string"))?;
            let token = resource
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("resource {name} has no type"))?;
            resources.push((name, normalize_type(token), resource));
        }
        Ok(Self { config, resources })
    }

    fn of_type(&self, token: &str) -> impl Iterator<Item = (&'a str, &'a Value)> + '_ {
        let token = normalize_type(token);
        self.resources
            .iter()
            .filter(move |(_, kind, _)| *kind == token)
            .map(|(name, _, resource)| (*name, *resource))
    }

    fn one_of_type(&self, token: &str) -> Result<(&'a str, &'a Value)> {
        let mut found = self.of_type(token);
        let first = found
            .next()
            .ok_or_else(|| anyhow!("the program declares no {token}; the twin needs exactly one"))?;
        if let Some((second, _)) = found.next() {
            bail!(
                "the program declares more than one {token} ({}, {second}); the twin models one",
                first.0
            );
        }
        Ok(first)
    }

    /// A property, with a whole-value `${configKey}` replaced by the config's default.
    fn property(&self, resource: &'a Value, path: &[&str]) -> Option<&'a Value> {
        let mut value = resource.get("properties")?;
        for key in path {
            value = self.resolve(value).get(*key)?;
        }
        Some(self.resolve(value))
    }

    fn resolve(&self, value: &'a Value) -> &'a Value {
        match whole_reference(value).and_then(|name| self.config.get(name)) {
            Some(default) => default,
            None => value,
        }
    }

    fn string(&self, resource: &'a Value, path: &[&str]) -> Option<String> {
        match self.property(resource, path)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        }
    }

    fn integer(&self, resource: &'a Value, path: &[&str]) -> Option<i64> {
        match self.property(resource, path)? {
            Value::Number(number) => number.as_i64(),
            Value::String(text) => text.parse().ok(),
            _ => None,
        }
    }

    /// The security groups named by a list of `${group.id}` (`what` names the list in errors).
    fn group_list(&self, owner: &str, what: &str, list: Option<&'a Value>) -> Result<Vec<String>> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        let items = list
            .as_sequence()
            .ok_or_else(|| anyhow!("{owner}: {what} is not a list"))?;
        items
            .iter()
            .map(|item| {
                group_id(item).ok_or_else(|| anyhow!("{owner}: {item:?} is not `${{<security group>.id}}`"))
            })
            .collect()
    }

    fn topology(&self) -> Result<Topology> {
        let vpc = self.vpc()?;
        let nat = self.nat()?;
        let mut groups = self.security_groups()?;
        let mut frontend = self.frontend()?;
        let (mut db_groups, database) = self.database()?;
        let (mut task_groups, task_subnets, desired_count) = self.ecs_service()?;
        let cloud_map = self.cloud_map()?;
        for (owner, list) in [
            (frontend.owner, &frontend.groups),
            ("the database cluster", &db_groups),
            ("the ECS service", &task_groups),
        ] {
            for group in list {
                if !groups.contains_key(group) {
                    bail!("{owner} names security group {group}, which the program does not declare");
                }
            }
        }
        // An ENI created without a group list carries the VPC's default group, which admits only
        // its own members (Express Mode makes a group of its own instead).
        let mut lists = vec![&mut db_groups, &mut task_groups];
        if let Platform::AppRunner { .. } = frontend.platform {
            lists.push(&mut frontend.groups);
        }
        let mut default_used = false;
        for list in lists.into_iter().filter(|list| list.is_empty()) {
            list.push(VPC_DEFAULT_SG.to_owned());
            default_used = true;
        }
        if default_used {
            if groups.contains_key(VPC_DEFAULT_SG) {
                bail!(
                    "the program declares a security group named {VPC_DEFAULT_SG}, the name the twin gives the VPC's default group"
                );
            }
            groups.insert(VPC_DEFAULT_SG.to_owned(), vpc_default_group());
        }
        if let Platform::Express { .. } = frontend.platform {
            for group in express_groups(frontend.port) {
                if groups.contains_key(&group.name) {
                    bail!(
                        "the program declares a security group named {}, the name the twin gives the group Express Mode makes itself",
                        group.name
                    );
                }
                groups.insert(group.name.clone(), group);
            }
        }
        for group in groups.values() {
            for rule in group.ingress.iter().chain(&group.egress) {
                if let Peer::Group(peer) = &rule.peer
                    && !groups.contains_key(peer)
                {
                    bail!(
                        "rule {} refers to security group {peer}, which the program does not declare",
                        rule.name
                    );
                }
            }
        }

        let subnet = |kind: SubnetKind, az: usize| -> Result<&Subnet> {
            vpc.subnets
                .iter()
                .find(|subnet| subnet.kind == kind && subnet.az == az)
                .ok_or_else(|| anyhow!("the VPC has no {kind:?} subnet in availability zone {az}"))
        };
        let at = |subnet: &Subnet, offset: u32| -> Ipv4Addr {
            Ipv4Addr::from(u32::from(subnet.cidr.network()) + offset)
        };
        let mut hosts = vec![Host {
            name: "internet".into(),
            kind: HostKind::Internet,
            subnet: None,
            address: crate::topology::INTERNET_HOST,
            public_ip: None,
            groups: Vec::new(),
        }];
        let resolver_subnet = vpc
            .subnets
            .iter()
            .find(|subnet| subnet.cidr.contains(&vpc.resolver()))
            .ok_or_else(|| anyhow!("no subnet holds the VPC resolver address {}", vpc.resolver()))?;
        hosts.push(Host {
            name: "resolver".into(),
            kind: HostKind::Resolver,
            subnet: Some(resolver_subnet.name.clone()),
            address: vpc.resolver(),
            public_ip: None,
            groups: Vec::new(),
        });
        let nat_azs: Vec<usize> = match nat {
            NatStrategy::None => Vec::new(),
            NatStrategy::Single => vec![1],
            NatStrategy::OnePerAz => (1..=vpc.azs).collect(),
        };
        for az in nat_azs {
            let public = subnet(SubnetKind::Public, az)?;
            hosts.push(Host {
                name: format!("nat-{az}"),
                kind: HostKind::Nat,
                subnet: Some(public.name.clone()),
                address: at(public, 10),
                public_ip: None,
                groups: Vec::new(),
            });
        }
        // The frontend's ENI in the first of its subnets (standing for App Runner's Hyperplane
        // ENIs, or for the Express tasks), and for Express one load balancer node in the same
        // subnet (standing for its nodes, one per AZ).
        let frontend_subnet = subnet(frontend.subnets, 1)?;
        match frontend.platform {
            Platform::AppRunner { .. } => hosts.push(Host {
                name: "apprunner".into(),
                kind: HostKind::AppRunner,
                subnet: Some(frontend_subnet.name.clone()),
                address: at(frontend_subnet, 10),
                public_ip: None,
                groups: frontend.groups.clone(),
            }),
            Platform::Express { load_balancer } => {
                // Public subnets: the task gets a public IP (assignPublicIp) and the load
                // balancer is internet-facing; private ones: neither has a public address.
                let public = load_balancer == Scheme::InternetFacing;
                let task = at(frontend_subnet, 40);
                let mut task_groups = frontend.groups.clone();
                task_groups.push(EXPRESS_SERVICE_SG.to_owned());
                hosts.push(Host {
                    name: "frontend".into(),
                    kind: HostKind::ExpressTask,
                    subnet: Some(frontend_subnet.name.clone()),
                    address: task,
                    public_ip: public.then(|| public_ipv4_for(task)),
                    groups: task_groups,
                });
                let node = at(frontend_subnet, 50);
                hosts.push(Host {
                    name: "alb".into(),
                    kind: HostKind::LoadBalancer,
                    subnet: Some(frontend_subnet.name.clone()),
                    address: node,
                    public_ip: public.then(|| public_ipv4_for(node)),
                    groups: vec![EXPRESS_LB_SG.to_owned()],
                });
            }
        }
        let db_subnet = subnet(SubnetKind::Private, 1)?;
        hosts.push(Host {
            name: "aurora".into(),
            kind: HostKind::Aurora,
            subnet: Some(db_subnet.name.clone()),
            address: at(db_subnet, 20),
            public_ip: None,
            groups: db_groups,
        });
        // Tasks alternate between the service's subnets (one per AZ), as ECS spreads them;
        // twice as many as desired: a deployment (maximum 200 %) starts all replacements before it
        // stops the old tasks, each at an address of its own.
        for number in 1..=2 * desired_count.max(1) {
            let az = (number - 1) % vpc.azs + 1;
            let task_subnet = subnet(task_subnets, az)?;
            hosts.push(Host {
                name: format!("task-{number}"),
                kind: HostKind::Task(number),
                subnet: Some(task_subnet.name.clone()),
                address: at(task_subnet, 29 + u32::try_from(number)?),
                public_ip: None,
                groups: task_groups.clone(),
            });
        }
        Ok(Topology {
            vpc,
            groups,
            hosts,
            nat,
            platform: frontend.platform,
            service_port: frontend.port,
            desired_tasks: desired_count,
            task_stop_timeout: self.task_stop_timeout()?,
            cloud_map,
            database,
            env: frontend.env,
        })
    }

    fn vpc(&self) -> Result<Vpc> {
        let (name, vpc) = self.one_of_type("awsx:ec2:Vpc")?;
        let cidr: Ipv4Net = self
            .string(vpc, &["cidrBlock"])
            .unwrap_or_else(|| "10.0.0.0/16".into())
            .parse()
            .with_context(|| format!("{name}: cidrBlock"))?;
        // availabilityZoneNames (a list) wins; else numberOfAvailabilityZones; awsx's default is 3.
        let azs = match self
            .property(vpc, &["availabilityZoneNames"])
            .and_then(Value::as_sequence)
        {
            Some(names) => names.len(),
            None => usize::try_from(self.integer(vpc, &["numberOfAvailabilityZones"]).unwrap_or(3))?,
        };
        if let Some(strategy) = self.string(vpc, &["subnetStrategy"])
            && strategy != "Auto"
        {
            bail!(
                "{name}: subnetStrategy {strategy} is not modelled (the twin lays subnets out as awsx's Auto does)"
            );
        }
        let specs = match self.property(vpc, &["subnetSpecs"]) {
            Some(list) => list
                .as_sequence()
                .ok_or_else(|| anyhow!("{name}: subnetSpecs is not a list"))?
                .iter()
                .map(|spec| {
                    let kind = match spec.get("type").and_then(Value::as_str) {
                        Some("Public") => SubnetKind::Public,
                        Some("Private") => SubnetKind::Private,
                        Some("Isolated") => SubnetKind::Isolated,
                        other => bail!("{name}: subnet type {other:?} is not modelled"),
                    };
                    let mask = self
                        .resolve(spec.get("cidrMask").ok_or_else(|| {
                            anyhow!("{name}: a subnet spec without cidrMask is not modelled")
                        })?)
                        .as_u64()
                        .ok_or_else(|| anyhow!("{name}: cidrMask is not a number"))?;
                    Ok((kind, u8::try_from(mask)?))
                })
                .collect::<Result<Vec<_>>>()?,
            // awsx's default for a /16: private /17+1, public /17+2 per AZ.
            None => {
                let az_bits = cidr.prefix_len() + new_bits(azs);
                let base = az_bits.max(16);
                vec![(SubnetKind::Private, base + 1), (SubnetKind::Public, base + 2)]
            }
        };
        let subnets = awsx_layout(cidr, azs, &specs)?;
        let flag = |key: &str, default: bool| -> Result<bool> {
            match self.property(vpc, &[key]) {
                None => Ok(default),
                Some(Value::Bool(value)) => Ok(*value),
                Some(other) => bail!("{name}: {key} is {other:?}, not true or false"),
            }
        };
        Ok(Vpc {
            cidr,
            azs,
            subnets,
            // awsx passes both to aws.ec2.Vpc, whose defaults are EC2's.
            dns_support: flag("enableDnsSupport", true)?,
            dns_hostnames: flag("enableDnsHostnames", false)?,
        })
    }

    fn nat(&self) -> Result<NatStrategy> {
        let (name, vpc) = self.one_of_type("awsx:ec2:Vpc")?;
        Ok(match self.string(vpc, &["natGateways", "strategy"]).as_deref() {
            None | Some("OnePerAz") => NatStrategy::OnePerAz,
            Some("Single") => NatStrategy::Single,
            Some("None") => NatStrategy::None,
            Some(other) => bail!("{name}: natGateways.strategy {other} is not one of None, Single, OnePerAz"),
        })
    }

    fn security_groups(&self) -> Result<BTreeMap<String, SecurityGroup>> {
        let mut groups = BTreeMap::new();
        for (name, group) in self.of_type("aws:ec2:SecurityGroup") {
            for inline in ["ingress", "egress"] {
                if self.property(group, &[inline]).is_some() {
                    bail!(
                        "{name}: inline `{inline}` rules are not read by the twin; declare aws:vpc:SecurityGroup{}Rule resources",
                        if inline == "ingress" { "Ingress" } else { "Egress" }
                    );
                }
            }
            groups.insert(
                name.to_owned(),
                SecurityGroup {
                    name: name.to_owned(),
                    description: self.string(group, &["description"]).unwrap_or_default(),
                    made_by: None,
                    ingress: Vec::new(),
                    egress: Vec::new(),
                },
            );
        }
        if self.of_type("aws:ec2:SecurityGroupRule").next().is_some() {
            bail!(
                "aws:ec2:SecurityGroupRule is not read by the twin; use aws:vpc:SecurityGroupIngressRule/EgressRule"
            );
        }
        for (token, ingress) in [
            ("aws:vpc:SecurityGroupIngressRule", true),
            ("aws:vpc:SecurityGroupEgressRule", false),
        ] {
            for (name, rule) in self.of_type(token) {
                let group = self
                    .property(rule, &["securityGroupId"])
                    .and_then(group_id)
                    .ok_or_else(|| anyhow!("{name}: securityGroupId is not `${{<security group>.id}}`"))?;
                let protocol = match self.string(rule, &["ipProtocol"]).as_deref() {
                    Some("tcp") | Some("6") => Protocol::Tcp,
                    Some("udp") | Some("17") => Protocol::Udp,
                    Some("-1") | Some("all") => Protocol::All,
                    other => bail!("{name}: ipProtocol {other:?} is not modelled (tcp, udp, -1)"),
                };
                let ports = match protocol {
                    Protocol::All => None,
                    _ => {
                        let from = self
                            .integer(rule, &["fromPort"])
                            .ok_or_else(|| anyhow!("{name}: no fromPort"))?;
                        let to = self
                            .integer(rule, &["toPort"])
                            .ok_or_else(|| anyhow!("{name}: no toPort"))?;
                        // EC2 takes -1 as "all" for ICMP types only (IpPermission.FromPort).
                        if from == -1 || to == -1 {
                            bail!(
                                "{name}: EC2 refuses it: \"TCP/UDP port (-1) out of range\" \
                                 (InvalidPermission.Malformed); all ports are fromPort 0, toPort 65535"
                            );
                        }
                        let range = (
                            u16::try_from(from).with_context(|| format!("{name}: fromPort {from}"))?,
                            u16::try_from(to).with_context(|| format!("{name}: toPort {to}"))?,
                        );
                        ensure!(range.0 <= range.1, "{name}: fromPort {from} is above toPort {to}");
                        Some(range)
                    }
                };
                let peer = match (
                    self.string(rule, &["cidrIpv4"]),
                    self.property(rule, &["referencedSecurityGroupId"]),
                ) {
                    (Some(cidr), None) => {
                        Peer::Cidr(cidr.parse().with_context(|| format!("{name}: cidrIpv4"))?)
                    }
                    (None, Some(reference)) => Peer::Group(group_id(reference).ok_or_else(|| {
                        anyhow!("{name}: referencedSecurityGroupId is not `${{<security group>.id}}`")
                    })?),
                    _ => bail!(
                        "{name}: exactly one of cidrIpv4 and referencedSecurityGroupId is modelled (prefix lists and IPv6 are not)"
                    ),
                };
                let entry = Rule {
                    name: name.to_owned(),
                    description: self.string(rule, &["description"]).unwrap_or_default(),
                    protocol,
                    ports,
                    peer,
                };
                let owner = groups.get_mut(&group).ok_or_else(|| {
                    anyhow!("{name} belongs to security group {group}, which the program does not declare")
                })?;
                if ingress {
                    owner.ingress.push(entry);
                } else {
                    owner.egress.push(entry);
                }
            }
        }
        Ok(groups)
    }

    /// The frontend: an App Runner service with its VPC connector, or an ECS Express Mode
    /// service (exactly one of the two).
    fn frontend(&self) -> Result<FrontendSpec> {
        let app_runner = self.of_type("aws:apprunner:Service").next().is_some();
        let express = self.of_type("aws:ecs:ExpressGatewayService").next().is_some();
        match (app_runner, express) {
            (true, false) => self.app_runner(),
            (false, true) => self.express(),
            (true, true) => bail!(
                "the program declares an aws:apprunner:Service and an aws:ecs:ExpressGatewayService; the twin models one frontend"
            ),
            (false, false) => bail!(
                "the program declares no frontend: the twin needs an aws:apprunner:Service (with an \
                 aws:apprunner:VpcConnector) or an aws:ecs:ExpressGatewayService"
            ),
        }
    }

    fn app_runner(&self) -> Result<FrontendSpec> {
        let (connector_name, connector) = self.one_of_type("aws:apprunner:VpcConnector")?;
        let groups = self.group_list(
            connector_name,
            "securityGroups",
            self.property(connector, &["securityGroups"]),
        )?;
        let subnets = subnet_kind(self.property(connector, &["subnets"]));
        let (name, service) = self.one_of_type("aws:apprunner:Service")?;
        let egress = match self
            .string(
                service,
                &["networkConfiguration", "egressConfiguration", "egressType"],
            )
            .as_deref()
        {
            Some("VPC") => EgressType::Vpc,
            None | Some("DEFAULT") => EgressType::Default,
            Some(other) => bail!("{name}: egressType {other} is not VPC or DEFAULT"),
        };
        let public = self
            .property(
                service,
                &[
                    "networkConfiguration",
                    "ingressConfiguration",
                    "isPubliclyAccessible",
                ],
            )
            .and_then(Value::as_bool)
            .unwrap_or(true);
        if !public {
            bail!("{name}: a private App Runner service (isPubliclyAccessible false) is not modelled");
        }
        let image = ["sourceConfiguration", "imageRepository", "imageConfiguration"];
        let port = self
            .string(service, &[image[0], image[1], image[2], "port"])
            .unwrap_or_else(|| "8080".into())
            .parse()
            .with_context(|| format!("{name}: imageConfiguration.port"))?;
        let mut env = BTreeMap::new();
        if let Some(vars) = self
            .property(
                service,
                &[image[0], image[1], image[2], "runtimeEnvironmentVariables"],
            )
            .and_then(Value::as_mapping)
        {
            for (key, value) in vars {
                let key = key
                    .as_str()
                    .ok_or_else(|| anyhow!("{name}: an environment variable name is not a string"))?;
                env.insert(key.to_owned(), self.env_value(name, key, self.resolve(value))?);
            }
        }
        Ok(FrontendSpec {
            platform: Platform::AppRunner { egress },
            owner: "the App Runner VPC connector",
            subnets,
            groups,
            port,
            env,
        })
    }

    /// An `aws:ecs:ExpressGatewayService`: its one network configuration (subnets, security
    /// groups), the container port and environment. What Express Mode adds itself (the load
    /// balancer, its group, the service group) follows from these ([`express_groups`]).
    fn express(&self) -> Result<FrontendSpec> {
        let (name, service) = self.one_of_type("aws:ecs:ExpressGatewayService")?;
        let networks = self
            .property(service, &["networkConfigurations"])
            .and_then(Value::as_sequence)
            .ok_or_else(|| {
                anyhow!(
                    "{name}: no networkConfigurations; Express Mode would then use the default VPC, which the twin does not model"
                )
            })?;
        let [network] = networks.as_slice() else {
            bail!(
                "{name}: {} networkConfigurations; the twin models exactly one",
                networks.len()
            );
        };
        let subnets = network
            .get("subnets")
            .map(|value| self.resolve(value))
            .ok_or_else(|| {
                anyhow!(
                    "{name}: networkConfigurations[0] has no subnets (the default VPC's are not modelled)"
                )
            })?;
        let subnets = subnet_kind(Some(subnets));
        let groups = self.group_list(
            name,
            "networkConfigurations[0].securityGroups",
            network.get("securityGroups").map(|value| self.resolve(value)),
        )?;
        // Express Mode's default container port is 80.
        let port = self
            .string(service, &["primaryContainer", "containerPort"])
            .unwrap_or_else(|| "80".into())
            .parse()
            .with_context(|| format!("{name}: primaryContainer.containerPort"))?;
        let mut env = BTreeMap::new();
        if let Some(vars) = self.property(service, &["primaryContainer", "environments"]) {
            let vars = vars
                .as_sequence()
                .ok_or_else(|| anyhow!("{name}: primaryContainer.environments is not a list"))?;
            for var in vars {
                let key = var
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("{name}: an environment entry has no name"))?;
                let value = var
                    .get("value")
                    .ok_or_else(|| anyhow!("{name}: environment {key} has no value"))?;
                env.insert(key.to_owned(), self.env_value(name, key, self.resolve(value))?);
            }
        }
        let load_balancer = match subnets {
            SubnetKind::Public => Scheme::InternetFacing,
            _ => Scheme::Internal,
        };
        Ok(FrontendSpec {
            platform: Platform::Express { load_balancer },
            owner: "the Express service",
            subnets,
            groups,
            port,
            env,
        })
    }

    /// A frontend environment value: literal, config, or a reference the twin can answer.
    fn env_value(&self, owner: &str, key: &str, value: &Value) -> Result<Env> {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => return Ok(Env::Text(number.to_string())),
            Value::Bool(flag) => return Ok(Env::Text(flag.to_string())),
            other => bail!("{owner}: {key} is {other:?}, not a string"),
        };
        if let Some(reference) = whole_reference(value) {
            let (resource, path) = reference.split_once('.').unwrap_or((reference, ""));
            let kind = self
                .resources
                .iter()
                .find(|(name, _, _)| *name == resource)
                .map(|(_, kind, _)| kind.as_str());
            if kind == Some(normalize_type("aws:rds:Cluster").as_str()) {
                return Ok(match path {
                    "endpoint" => Env::DbEndpoint,
                    "port" => Env::DbPort,
                    "databaseName" => Env::DbName,
                    "masterUserSecrets[0].secretArn" => Env::DbSecretArn,
                    other => bail!("{owner}: {key} = ${{{resource}.{other}}} is not modelled"),
                });
            }
        }
        // Interpolations of resource names (e.g. the Cloud Map service and namespace).
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| anyhow!("{owner}: {key} has an unclosed ${{"))?
                + start;
            let inner = &rest[start + 2..end];
            let resolved = match inner.split_once('.') {
                Some((resource, "name")) => self
                    .resources
                    .iter()
                    .find(|(name, _, _)| *name == resource)
                    .and_then(|(_, _, value)| self.string(value, &["name"])),
                Some(_) => None,
                None => self.config.get(inner).and_then(|value| match value {
                    Value::String(text) => Some(text.clone()),
                    Value::Number(number) => Some(number.to_string()),
                    Value::Bool(flag) => Some(flag.to_string()),
                    _ => None,
                }),
            };
            out.push_str(&resolved.ok_or_else(|| {
                anyhow!("{owner}: {key} refers to ${{{inner}}}, which the twin cannot resolve")
            })?);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(Env::Text(out))
    }

    /// Serverless v2 pauses after `secondsUntilAutoPause` only at a minimum of 0 ACU.
    fn auto_pause(&self, cluster: &'a Value) -> Result<Option<Duration>> {
        let scaling = |key: &str| self.integer(cluster, &["serverlessv2ScalingConfiguration", key]);
        Ok(match (scaling("minCapacity"), scaling("secondsUntilAutoPause")) {
            (Some(0), Some(seconds)) => Some(Duration::from_secs(u64::try_from(seconds)?)),
            // AWS's default when the setting is absent.
            (Some(0), None) => Some(Duration::from_secs(300)),
            _ => None,
        })
    }

    fn database(&self) -> Result<(Vec<String>, Database)> {
        let (name, cluster) = self.one_of_type("aws:rds:Cluster")?;
        let groups = self.group_list(
            name,
            "vpcSecurityGroupIds",
            self.property(cluster, &["vpcSecurityGroupIds"]),
        )?;
        let database = Database {
            endpoint: DB_ENDPOINT.to_owned(),
            port: u16::try_from(self.integer(cluster, &["port"]).unwrap_or(5432))?,
            name: self
                .string(cluster, &["databaseName"])
                .unwrap_or_else(|| "postgres".into()),
            master_username: self
                .string(cluster, &["masterUsername"])
                .ok_or_else(|| anyhow!("{name}: no masterUsername"))?,
            auto_pause: self.auto_pause(cluster)?,
        };
        Ok((groups, database))
    }

    fn ecs_service(&self) -> Result<(Vec<String>, SubnetKind, usize)> {
        let (name, service) = self.one_of_type("aws:ecs:Service")?;
        let groups = self.group_list(
            name,
            "networkConfiguration.securityGroups",
            self.property(service, &["networkConfiguration", "securityGroups"]),
        )?;
        if self
            .property(service, &["networkConfiguration", "assignPublicIp"])
            .and_then(Value::as_bool)
            == Some(true)
        {
            bail!("{name}: assignPublicIp true is not modelled");
        }
        let subnets = subnet_kind(self.property(service, &["networkConfiguration", "subnets"]));
        let count = usize::try_from(self.integer(service, &["desiredCount"]).unwrap_or(1))?;
        Ok((groups, subnets, count))
    }

    /// How long ECS waits after SIGTERM before SIGKILL: the `stopTimeout` of the private service's
    /// container (ECS's default, 30 s, when the task definition sets none).
    fn task_stop_timeout(&self) -> Result<Duration> {
        let (name, service) = self.one_of_type("aws:ecs:Service")?;
        let definition = self
            .property(service, &["taskDefinition"])
            .and_then(whole_reference)
            .and_then(|reference| reference.strip_suffix(".arn"))
            .and_then(|resource| self.resources.iter().find(|(name, _, _)| *name == resource))
            .map(|(_, _, value)| *value)
            .ok_or_else(|| anyhow!("{name}: taskDefinition is not `${{<task definition>.arn}}`"))?;
        let containers = self
            .property(definition, &["containerDefinitions", "fn::toJSON"])
            .and_then(Value::as_sequence)
            .ok_or_else(|| {
                anyhow!("{name}: the task definition's containerDefinitions are not fn::toJSON of a list")
            })?;
        let seconds = match containers
            .first()
            .and_then(|container| container.get("stopTimeout"))
        {
            None => 30,
            Some(value) => value
                .as_u64()
                .ok_or_else(|| anyhow!("{name}: stopTimeout {value:?} is not a number of seconds"))?,
        };
        Ok(Duration::from_secs(seconds))
    }

    fn cloud_map(&self) -> Result<CloudMap> {
        let (_, namespace) = self.one_of_type("aws:servicediscovery:PrivateDnsNamespace")?;
        let (name, service) = self.one_of_type("aws:servicediscovery:Service")?;
        let records = self
            .property(service, &["dnsConfig", "dnsRecords"])
            .and_then(Value::as_sequence)
            .ok_or_else(|| anyhow!("{name}: no dnsConfig.dnsRecords"))?;
        let ttl = records
            .iter()
            .find(|record| record.get("type").and_then(Value::as_str) == Some("A"))
            .and_then(|record| record.get("ttl"))
            .map(|ttl| self.resolve(ttl))
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("{name}: no A record with a ttl"))?;
        Ok(CloudMap {
            namespace: self
                .string(namespace, &["name"])
                .ok_or_else(|| anyhow!("the Cloud Map namespace has no name"))?,
            service: self
                .string(service, &["name"])
                .ok_or_else(|| anyhow!("{name}: no name"))?,
            ttl: u32::try_from(ttl)?,
            negative_ttl: crate::topology::CLOUD_MAP_SOA_TTL,
        })
    }
}

/// What the program says about the frontend, on either platform.
struct FrontendSpec {
    platform: Platform,
    /// Who names `groups` (for errors).
    owner: &'static str,
    /// The subnets of its ENIs: the connector's for App Runner, the service's for Express.
    subnets: SubnetKind,
    /// The security groups the program puts on those ENIs.
    groups: Vec<String>,
    port: u16,
    env: BTreeMap<String, Env>,
}

/// The two security groups ECS Express Mode makes for a service, which the program does not
/// declare ([`EXPRESS_SOURCE`]): the load balancer's admits HTTPS from clients and may reach the
/// service group on the container port; the service group admits the load balancer on the
/// container port and allows all outbound traffic. The guide spells these out for a service
/// given no group; that the service group also sits on the tasks beside a group the program
/// gives is inferred, as the program's comment on `frontend-sg` says (Express Mode's managed
/// policy may change rules only on groups tagged AmazonECSManaged, so it cannot open the
/// program's group to its load balancer, yet the load balancer reaches the tasks).
/// The VPC's default security group ([`VPC_DEFAULT_SOURCE`]): all traffic from its own members
/// in, all traffic out.
fn vpc_default_group() -> SecurityGroup {
    let rule = |name: &str, description: &str, peer| Rule {
        name: name.to_owned(),
        description: format!("{description} (implicit: {VPC_DEFAULT_SOURCE})"),
        protocol: Protocol::All,
        ports: None,
        peer,
    };
    SecurityGroup {
        name: VPC_DEFAULT_SG.to_owned(),
        description: "the VPC's default security group".to_owned(),
        made_by: Some("the VPC"),
        ingress: vec![rule(
            "vpc-default-from-members",
            "all traffic from the group's own members",
            Peer::Group(VPC_DEFAULT_SG.to_owned()),
        )],
        egress: vec![rule(
            "vpc-default-all-out",
            "all traffic to anywhere",
            Peer::Cidr(Ipv4Net::default()),
        )],
    }
}

fn express_groups(port: u16) -> [SecurityGroup; 2] {
    let made_by = Some("ECS Express Mode");
    let rule = |name: &str, description: &str, protocol, ports, peer| Rule {
        name: name.to_owned(),
        description: format!("{description} (implicit: {EXPRESS_SOURCE})"),
        protocol,
        ports,
        peer,
    };
    let anywhere = Peer::Cidr(Ipv4Net::default());
    [
        SecurityGroup {
            name: EXPRESS_LB_SG.to_owned(),
            description: "Express Mode's load balancer".to_owned(),
            made_by,
            ingress: vec![rule(
                "express-lb-https-in",
                "HTTPS from clients to the listener",
                Protocol::Tcp,
                Some((LISTENER_PORT, LISTENER_PORT)),
                anywhere.clone(),
            )],
            egress: vec![rule(
                "express-lb-to-service",
                "the listener's targets on the container port",
                Protocol::Tcp,
                Some((port, port)),
                Peer::Group(EXPRESS_SERVICE_SG.to_owned()),
            )],
        },
        SecurityGroup {
            name: EXPRESS_SERVICE_SG.to_owned(),
            description: "Express Mode's service group on the tasks".to_owned(),
            made_by,
            ingress: vec![rule(
                "express-service-from-lb",
                "the load balancer on the container port",
                Protocol::Tcp,
                Some((port, port)),
                Peer::Group(EXPRESS_LB_SG.to_owned()),
            )],
            egress: vec![rule(
                "express-service-all-out",
                "all outbound traffic",
                Protocol::All,
                None,
                anywhere,
            )],
        },
    ]
}

/// `${group.id}` → `group`.
fn group_id(value: &Value) -> Option<String> {
    whole_reference(value)?.strip_suffix(".id").map(str::to_owned)
}

/// `${vpc.publicSubnetIds}` → public; anything else (private subnet ids) → private.
fn subnet_kind(value: Option<&Value>) -> SubnetKind {
    match value.and_then(whole_reference) {
        Some(reference) if reference.ends_with(".publicSubnetIds") => SubnetKind::Public,
        _ => SubnetKind::Private,
    }
}

fn new_bits(count: usize) -> u8 {
    let mut bits = 0;
    while (1_usize << bits) < count {
        bits += 1;
    }
    bits
}

/// Subnets as awsx's `Auto` strategy lays them out (awsx/ec2/subnetDistributorNew.ts): the VPC
/// is split into one block per AZ (`prefix + ceil(log2(azs))`); inside each block the specs
/// follow one another in order, each starting at the next boundary of its own size.
pub fn awsx_layout(cidr: Ipv4Net, azs: usize, specs: &[(SubnetKind, u8)]) -> Result<Vec<Subnet>> {
    let az_prefix = cidr.prefix_len() + new_bits(azs);
    let az_size = 1_u64 << (32 - u32::from(az_prefix));
    let needed: u64 = specs
        .iter()
        .map(|(_, mask)| 1_u64 << (32 - u32::from(*mask)))
        .sum();
    if needed > az_size {
        bail!(
            "subnets are too large for the VPC: each AZ has {az_size} addresses, the subnets need {needed}"
        );
    }
    let mut subnets = Vec::new();
    for az in 1..=azs {
        let az_base = u64::from(u32::from(cidr.network())) + (az as u64 - 1) * az_size;
        let mut next = az_base;
        for (kind, mask) in specs {
            let size = 1_u64 << (32 - u32::from(*mask));
            // Align up to the subnet's own size.
            let start = next.div_ceil(size) * size;
            let net = Ipv4Net::new(Ipv4Addr::from(u32::try_from(start)?), *mask)?;
            next = start + size;
            subnets.push(Subnet {
                name: format!("{}-{az}", kind.label()),
                kind: *kind,
                az,
                cidr: net,
            });
        }
    }
    Ok(subnets)
}
