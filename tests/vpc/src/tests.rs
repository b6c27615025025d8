//! Unit tests on the real program and on mutated copies (no root needed).

use std::net::Ipv4Addr;

use crate::Topology;
use crate::firewall::{self, Members};
use crate::program;
use crate::reach::{self, Verdict};
use crate::topology::{
    EgressType, Env, HostKind, NatStrategy, Platform, PublicEntry, Scheme, VPC_DEFAULT_SG,
};

fn program_text() -> String {
    std::fs::read_to_string(program::program_path()).expect("reading the Pulumi program")
}

fn real() -> Topology {
    program::load().expect("the real program's topology")
}

fn express_text() -> String {
    std::fs::read_to_string(program::workspace_program(program::EXPRESS_PROGRAM))
        .expect("reading the Express program")
}

fn express() -> Topology {
    program::from_yaml(&express_text()).expect("the Express program's topology")
}

/// Checks each (from, to, port, verdict, a phrase of the reason) and prints the matrix.
fn assert_verdicts(topology: &Topology, expected: &[(&str, &str, u16, Verdict, &str)]) {
    for (from, to, port, want, reason) in expected {
        let (got, because) = verdict(topology, from, to, *port);
        assert_eq!(got, *want, "{from} → {to}:{port}: {because}");
        assert!(
            because.contains(reason),
            "{from} → {to}:{port}: {because:?} should mention {reason:?}"
        );
    }
    let rows: Vec<_> = reach::standard_probes(topology)
        .into_iter()
        .map(|(from, to, port)| (reach::analyze(topology, &from, &to, port), None))
        .collect();
    println!("{}", reach::table(&rows));
}

fn verdict(topology: &Topology, from: &str, to: &str, port: u16) -> (Verdict, String) {
    let path = reach::analyze(topology, from, to, port);
    (path.verdict, path.because)
}

#[test]
fn subnets_are_laid_out_as_awsx_auto_does() {
    let topology = real();
    let subnets: Vec<(String, String)> = topology
        .vpc
        .subnets
        .iter()
        .map(|subnet| (subnet.name.clone(), subnet.cidr.to_string()))
        .collect();
    let expected = [
        ("public-1", "10.0.0.0/24"),
        ("private-1", "10.0.16.0/20"),
        ("public-2", "10.0.128.0/24"),
        ("private-2", "10.0.144.0/20"),
    ];
    assert_eq!(
        subnets,
        expected
            .map(|(name, cidr)| (name.to_owned(), cidr.to_owned()))
            .to_vec()
    );
    assert_eq!(topology.vpc.resolver(), Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(topology.host("resolver").subnet.as_deref(), Some("public-1"));
}

#[test]
fn the_program_attaches_its_groups_and_declares_nat_dns_and_vpc_egress() {
    let topology = real();
    assert_eq!(topology.host("apprunner").groups, ["connector-sg"]);
    assert_eq!(topology.host("aurora").groups, ["db-sg"]);
    assert_eq!(topology.host("task-1").groups, ["private-service-sg"]);
    assert_eq!(topology.host("task-2").groups, ["private-service-sg"]);
    assert_ne!(topology.host("task-1").address, topology.host("task-2").address);
    assert_eq!(topology.nat, NatStrategy::Single);
    assert_eq!(topology.host("nat-1").subnet.as_deref(), Some("public-1"));
    assert_eq!(
        topology.platform,
        Platform::AppRunner {
            egress: EgressType::Vpc
        }
    );
    assert_eq!(topology.frontend().name, "apprunner");
    assert!(topology.load_balancer().is_none());
    assert_eq!(topology.cloud_map.fqdn(), "privateservice.apprunner.demo");
    assert_eq!(topology.cloud_map.ttl, 10);
    assert_eq!(topology.database.name, "apprunnerdemo");
    assert_eq!(topology.database.master_username, "appadmin");
    assert_eq!(
        topology.env_text("ECSPRIVATESERVICE"),
        Some("http://privateservice.apprunner.demo:8080")
    );
    assert_eq!(topology.env.get("DB_HOST"), Some(&Env::DbEndpoint));
    assert_eq!(topology.env.get("DBSECRETSNAME"), Some(&Env::DbSecretArn));
    let connector = &topology.groups["connector-sg"];
    let names: Vec<&str> = connector.egress.iter().map(|rule| rule.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "connector-to-db",
            "connector-to-private-service",
            "connector-https-out"
        ]
    );
    assert!(connector.ingress.is_empty());
}

#[test]
fn the_matrix_of_the_real_program() {
    let topology = real();
    let expected = [
        (
            "internet",
            "apprunner",
            8080,
            Verdict::Open,
            "App Runner public endpoint",
        ),
        ("internet", "aurora", 5432, Verdict::Blocked, "internet gateway"),
        ("internet", "task-1", 8080, Verdict::Blocked, "internet gateway"),
        (
            "apprunner",
            "aurora",
            5432,
            Verdict::Open,
            "egress connector-to-db",
        ),
        (
            "apprunner",
            "task-1",
            8080,
            Verdict::Open,
            "ingress private-service-from-connector",
        ),
        ("apprunner", "internet", 443, Verdict::Open, "nat-1"),
        (
            "apprunner",
            "internet",
            80,
            Verdict::Blocked,
            "egress of connector-sg",
        ),
        ("apprunner", "resolver", 53, Verdict::Open, "AWS exception"),
        (
            "task-1",
            "aurora",
            5432,
            Verdict::Blocked,
            "egress of private-service-sg",
        ),
        (
            "task-1",
            "apprunner",
            8080,
            Verdict::Blocked,
            "App Runner VPC connector: outgoing traffic only",
        ),
        (
            "task-1",
            "internet",
            443,
            Verdict::Open,
            "private-service-https-out",
        ),
        ("aurora", "internet", 443, Verdict::Blocked, "egress of db-sg"),
        ("aurora", "task-1", 8080, Verdict::Blocked, "egress of db-sg"),
    ];
    assert_verdicts(&topology, &expected);
}

#[test]
fn mutations_change_exactly_the_paths_they_should() {
    let text = program_text();
    without_the_database_ingress_rule_only_the_database_is_cut_off(&text, "db-from-connector", "apprunner");

    let no_ps_ingress =
        program::from_yaml(&program::without_resource(&text, "private-service-from-connector").unwrap())
            .unwrap();
    assert_eq!(
        verdict(&no_ps_ingress, "apprunner", "task-1", 8080).0,
        Verdict::Blocked
    );
    assert_eq!(
        verdict(&no_ps_ingress, "apprunner", "aurora", 5432).0,
        Verdict::Open
    );

    let no_nat =
        program::from_yaml(&program::with_config_default(&text, "natStrategy", "None").unwrap()).unwrap();
    assert_eq!(no_nat.nat, NatStrategy::None);
    let (got, because) = verdict(&no_nat, "apprunner", "internet", 443);
    assert_eq!(got, Verdict::Blocked);
    assert!(because.contains("no 0.0.0.0/0 route"), "{because}");
    assert!(no_nat.hosts.iter().all(|host| !host.name.starts_with("nat-")));

    let no_https =
        program::from_yaml(&program::without_resource(&text, "connector-https-out").unwrap()).unwrap();
    let (got, because) = verdict(&no_https, "apprunner", "internet", 443);
    assert_eq!(got, Verdict::Blocked);
    assert!(because.starts_with("egress of connector-sg"), "{because}");

    let per_az =
        program::from_yaml(&program::with_config_default(&text, "natStrategy", "OnePerAz").unwrap()).unwrap();
    let (_, because) = verdict(&per_az, "task-2", "internet", 443);
    assert!(because.contains("nat-2"), "{because}");
}

/// In AWS an ENI created without a group list carries the VPC's default group, which admits
/// only its own members (issue 21); the twin used to leave such a host unfiltered.
#[test]
fn a_resource_given_no_security_group_carries_the_vpcs_default_group() {
    let text = program_text();
    let no_db_groups = text.replace("      vpcSecurityGroupIds:\n        - ${db-sg.id}\n", "");
    assert_ne!(no_db_groups, text, "the mutation applies");
    let topology = program::from_yaml(&no_db_groups).unwrap();
    assert_eq!(topology.host("aurora").groups, [VPC_DEFAULT_SG]);
    // connector-https-out allows tcp/443 to anywhere; aurora's default group admits only members.
    let (got, because) = verdict(&topology, "apprunner", "aurora", 443);
    assert_eq!(got, Verdict::Blocked, "{because}");
    assert!(because.contains(VPC_DEFAULT_SG), "{because}");
    let members = Members::new();
    let ruleset = firewall::security_groups(&topology, topology.host("aurora"), &members);
    assert!(ruleset.contains("vpc-default-from-members"), "{ruleset}");

    // The tasks without a group list too: now members of the same default group, they reach it.
    let both = no_db_groups.replace(
        "        securityGroups:\n          - ${private-service-sg.id}\n",
        "",
    );
    assert_ne!(both, no_db_groups, "the mutation applies");
    let topology = program::from_yaml(&both).unwrap();
    let (got, because) = verdict(&topology, "task-1", "aurora", 5432);
    assert_eq!(got, Verdict::Open, "{because}");
    assert!(
        because.contains("vpc-default-all-out") && because.contains("vpc-default-from-members"),
        "{because}"
    );
}

/// A VPC connector carries App Runner's outgoing traffic only: ingress rules on its group open
/// nothing to the service (issue 21); the twin used to let them.
#[test]
fn ingress_rules_on_the_connectors_group_open_nothing_to_app_runner() {
    let text = program_text();
    let opened = text.replace(
        "  private-service-https-out:\n",
        "  connector-from-tasks:
    type: aws:vpc:SecurityGroupIngressRule
    properties:
      securityGroupId: ${connector-sg.id}
      ipProtocol: tcp
      fromPort: 8080
      toPort: 8080
      referencedSecurityGroupId: ${private-service-sg.id}
  tasks-to-connector:
    type: aws:vpc:SecurityGroupEgressRule
    properties:
      securityGroupId: ${private-service-sg.id}
      ipProtocol: tcp
      fromPort: 8080
      toPort: 8080
      referencedSecurityGroupId: ${connector-sg.id}
  private-service-https-out:\n",
    );
    assert_ne!(opened, text, "the mutation applies");
    let topology = program::from_yaml(&opened).unwrap();
    let (got, because) = verdict(&topology, "task-1", "apprunner", 8080);
    assert_eq!(got, Verdict::Blocked, "{because}");
    assert_eq!(because, reach::CONNECTOR_IS_OUTBOUND);
    let members = Members::new();
    let ruleset = firewall::security_groups(&topology, topology.host("apprunner"), &members);
    assert!(!ruleset.contains("connector-from-tasks"), "{ruleset}");
    assert!(
        firewall::security_groups(&topology, topology.host("task-1"), &members)
            .contains("tasks-to-connector"),
        "the tasks' egress rule is compiled (it is the connector that refuses)"
    );
}

/// The VPC's DNS settings as EC2 reads them: support on and hostnames off unless the program
/// says otherwise; the Cloud Map zone needs both, and without support nothing answers at +2.
#[test]
fn the_vpcs_dns_settings_decide_what_resolves() {
    let text = program_text();
    assert!(real().vpc.private_zones_resolve());
    let unset = text.replace(
        "      enableDnsSupport: true\n      enableDnsHostnames: true\n",
        "",
    );
    assert_ne!(unset, text, "the mutation applies");
    let topology = program::from_yaml(&unset).unwrap();
    assert!(topology.vpc.dns_support && !topology.vpc.private_zones_resolve());
    let off = text.replace("enableDnsSupport: true", "enableDnsSupport: false");
    let topology = program::from_yaml(&off).unwrap();
    let (got, because) = verdict(&topology, "apprunner", "resolver", 53);
    assert_eq!(got, Verdict::Blocked, "{because}");
    assert!(because.contains("enableDnsSupport"), "{because}");
}

#[test]
fn what_the_twin_cannot_model_is_an_error_naming_the_resource() {
    let text = program_text();
    let dangling = program::without_resource(&text, "db-sg").unwrap();
    let error = program::from_yaml(&dangling).unwrap_err().to_string();
    assert!(error.contains("db-sg"), "{error}");
    let legacy = text.replace("subnetStrategy: Auto", "subnetStrategy: Legacy");
    let error = program::from_yaml(&legacy).unwrap_err().to_string();
    assert!(error.contains("Legacy"), "{error}");
}

/// EC2 takes -1 as "all ports" only for ICMP: a TCP rule from -1 to -1 fails at `pulumi up`
/// (the twin once read it as all ports).
#[test]
fn a_tcp_rule_with_port_minus_one_is_refused_as_ec2_refuses_it() {
    let text = program_text();
    let declared =
        "      fromPort: 8080\n      toPort: 8080\n      referencedSecurityGroupId: ${connector-sg.id}\n";
    assert!(text.contains(declared));
    let all_ports = text.replace(declared, &declared.replace("8080", "-1"));
    let error = program::from_yaml(&all_ports).unwrap_err().to_string();
    assert!(
        error.contains("private-service-from-connector") && error.contains("TCP/UDP port (-1) out of range"),
        "{error}"
    );
    let reversed = text.replace(declared, &declared.replacen("8080", "8081", 1));
    let error = program::from_yaml(&reversed).unwrap_err().to_string();
    assert!(error.contains("fromPort 8081 is above toPort 8080"), "{error}");
}

#[test]
fn security_groups_compile_to_stateful_default_deny_rules_with_aws_exceptions() {
    let topology = real();
    let mut members = Members::new();
    members.insert("connector-sg".into(), vec![topology.host("apprunner").address]);
    members.insert("private-service-sg".into(), vec![topology.host("task-1").address]);
    members.insert("db-sg".into(), vec![topology.host("aurora").address]);

    let aurora = firewall::security_groups(&topology, topology.host("aurora"), &members);
    assert!(
        aurora.starts_with("table inet avt_sg\ndelete table inet avt_sg\ntable inet avt_sg {"),
        "{aurora}"
    );
    assert!(
        aurora.contains("set sg_connector_sg {\n    type ipv4_addr\n    elements = { 10.0.16.10 }"),
        "{aurora}"
    );
    assert!(
        aurora
            .contains("ip saddr @sg_connector_sg tcp dport 5432 accept comment \"db-from-connector (db-sg)"),
        "{aurora}"
    );
    assert!(aurora.contains("ct state established accept"), "{aurora}");
    assert!(
        !aurora.contains("related"),
        "ICMP errors about an admitted flow pass only an ICMP rule: {aurora}"
    );
    assert!(
        aurora.contains("ip daddr 10.0.0.2 udp dport 53 accept comment \"AWS exception"),
        "{aurora}"
    );
    assert!(
        aurora.contains("ip daddr { 169.254.169.254, 169.254.170.2 } accept"),
        "{aurora}"
    );
    assert!(
        aurora.contains("counter drop comment \"default deny: no ingress rule of db-sg matched\""),
        "{aurora}"
    );
    assert!(
        aurora.contains("counter drop comment \"default deny: no egress rule of db-sg matched\""),
        "{aurora}"
    );
    // db-sg has no egress rule: nothing but the exceptions and replies leave.
    assert!(!aurora.contains("daddr @"), "{aurora}");

    let connector = firewall::security_groups(&topology, topology.host("apprunner"), &members);
    assert!(
        connector.contains("ip daddr @sg_db_sg tcp dport 5432 accept"),
        "{connector}"
    );
    assert!(
        connector.contains("ip daddr @sg_private_service_sg tcp dport 8080 accept"),
        "{connector}"
    );
    assert!(
        connector.contains("ip daddr 0.0.0.0/0 tcp dport 443 accept"),
        "{connector}"
    );
    assert!(
        connector.contains("iifname \"pub0\" tcp dport 8080 accept"),
        "{connector}"
    );

    let nat = firewall::nat_gateway(&topology);
    assert!(
        nat.contains("ip saddr 10.0.0.0/16 ip daddr != 10.0.0.0/16 oifname \"eni0\" masquerade"),
        "{nat}"
    );
    let router = firewall::vpc_router(&topology);
    assert!(router.contains("iifname \"igw0\" counter drop"), "{router}");
    assert!(
        router.contains("oifname \"igw0\" ip saddr { 10.0.0.10 } masquerade"),
        "only the NAT gateway leaves as the Elastic IP: {router}"
    );
    assert!(
        router.contains("oifname \"igw0\" ip saddr != { 10.0.0.10 } counter drop"),
        "{router}"
    );
    // Ingress is judged before any translation, egress on what is sent and forwarded.
    assert!(
        connector.contains("type filter hook prerouting priority mangle; policy accept;\n    jump ingress"),
        "{connector}"
    );
    assert!(
        connector.contains("type filter hook forward priority filter; policy accept;\n    jump egress"),
        "{connector}"
    );
}

/// Writes the compiled rulesets of the real program to a directory (for `nft -c -f` checks).
#[test]
fn rulesets_can_be_written_for_a_check() {
    let topology = real();
    let members = Members::new();
    let dir = std::env::var_os("AVT_DUMP_RULESETS");
    for host in topology.hosts.iter().filter(|host| !host.groups.is_empty()) {
        let text = firewall::security_groups(&topology, host, &members);
        assert!(text.ends_with("}\n"));
        if let Some(dir) = &dir {
            std::fs::write(std::path::Path::new(dir).join(format!("{}.nft", host.name)), text).unwrap();
        }
    }
    if let Some(dir) = &dir {
        std::fs::write(
            std::path::Path::new(dir).join("vpc.nft"),
            firewall::vpc_router(&topology),
        )
        .unwrap();
        std::fs::write(
            std::path::Path::new(dir).join("nat.nft"),
            firewall::nat_gateway(&topology),
        )
        .unwrap();
    }
}

// ------------------------------------------------------------------ ECS Express Mode

#[test]
fn the_express_program_runs_its_frontend_tasks_behind_an_implicit_load_balancer() {
    let topology = express();
    assert_eq!(
        topology.platform,
        Platform::Express {
            load_balancer: Scheme::InternetFacing
        }
    );
    assert!(topology.hosts.iter().all(|host| host.kind != HostKind::AppRunner));
    let frontend = topology.frontend();
    assert_eq!(frontend.name, "frontend");
    assert_eq!(frontend.subnet.as_deref(), Some("public-1"));
    assert_eq!(frontend.groups, ["frontend-sg", "express-service-sg"]);
    assert_eq!(frontend.address, Ipv4Addr::new(10, 0, 0, 40));
    assert_eq!(
        frontend.public_ip,
        Some(Ipv4Addr::new(203, 0, 113, 40)),
        "assignPublicIp"
    );
    let alb = topology.load_balancer().unwrap();
    assert_eq!(alb.name, "alb");
    assert_eq!(alb.subnet.as_deref(), Some("public-1"));
    assert_eq!(alb.groups, ["express-lb-sg"]);
    assert_eq!(
        topology.public_entry(),
        Some(PublicEntry {
            node: "alb".into(),
            address: Ipv4Addr::new(203, 0, 113, 50),
            port: 443,
        })
    );
    assert_eq!(
        topology.address_seen_from("internet", "frontend"),
        Ipv4Addr::new(203, 0, 113, 40)
    );
    assert_eq!(topology.address_seen_from("alb", "frontend"), frontend.address);
    assert_eq!(topology.service_port, 8080);
    assert_eq!(topology.host("aurora").groups, ["db-sg"]);
    assert_eq!(topology.host("task-1").groups, ["private-service-sg"]);

    // The program's groups, and the two Express Mode makes, marked as such.
    let declared = &topology.groups["frontend-sg"];
    assert_eq!(declared.made_by, None);
    let names: Vec<&str> = declared.egress.iter().map(|rule| rule.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "frontend-to-db",
            "frontend-to-private-service",
            "frontend-https-out"
        ]
    );
    assert!(declared.ingress.is_empty());
    let rules = |group: &str| -> Vec<(String, String, String)> {
        let group = &topology.groups[group];
        assert!(group.made_by.is_some(), "{} is implicit", group.name);
        group
            .ingress
            .iter()
            .map(|rule| ("in".to_owned(), rule))
            .chain(group.egress.iter().map(|rule| ("out".to_owned(), rule)))
            .map(|(direction, rule)| {
                let peer = match &rule.peer {
                    crate::topology::Peer::Cidr(cidr) => cidr.to_string(),
                    crate::topology::Peer::Group(group) => group.clone(),
                };
                (direction, format!("{} {}", rule.name, rule.what()), peer)
            })
            .collect()
    };
    let owned = |rows: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        rows.iter()
            .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
            .collect()
    };
    assert_eq!(
        rules("express-lb-sg"),
        owned(&[
            ("in", "express-lb-https-in tcp/443", "0.0.0.0/0"),
            ("out", "express-lb-to-service tcp/8080", "express-service-sg"),
        ])
    );
    assert_eq!(
        rules("express-service-sg"),
        owned(&[
            ("in", "express-service-from-lb tcp/8080", "express-lb-sg"),
            ("out", "express-service-all-out all traffic", "0.0.0.0/0"),
        ])
    );

    // The same environment App Runner gives the frontend (a list of {name, value} here).
    assert_eq!(topology.env, real().env);
    assert_eq!(topology.env.get("DB_PORT"), Some(&Env::DbPort));
    assert_eq!(
        topology.env_text("ECSPRIVATESERVICE"),
        Some("http://privateservice.apprunner.demo:8080")
    );
}

#[test]
fn the_matrix_of_the_express_program() {
    let topology = express();
    assert_verdicts(
        &topology,
        &[
            (
                "internet",
                "alb",
                443,
                Verdict::Open,
                "ingress express-lb-https-in",
            ),
            (
                "internet",
                "alb",
                443,
                Verdict::Open,
                "ingress express-service-from-lb (express-service-sg, implicit",
            ),
            (
                "alb",
                "frontend",
                8080,
                Verdict::Open,
                "egress express-lb-to-service",
            ),
            (
                "internet",
                "frontend",
                8080,
                Verdict::Blocked,
                "has a public IPv4 address, but nothing admits the internet",
            ),
            ("internet", "aurora", 5432, Verdict::Blocked, "no public IPv4"),
            ("internet", "task-1", 8080, Verdict::Blocked, "no public IPv4"),
            (
                "frontend",
                "aurora",
                5432,
                Verdict::Open,
                "egress frontend-to-db (frontend-sg: tcp/5432 to db-sg); ingress db-from-frontend",
            ),
            (
                "frontend",
                "task-1",
                8080,
                Verdict::Open,
                "ingress private-service-from-frontend",
            ),
            (
                "frontend",
                "internet",
                443,
                Verdict::Open,
                "egress frontend-https-out (frontend-sg: tcp/443 to 0.0.0.0/0); public subnet public-1: 0.0.0.0/0 → internet gateway, leaving as its public IPv4 203.0.113.40",
            ),
            (
                "frontend",
                "internet",
                80,
                Verdict::Open,
                "egress express-service-all-out",
            ),
            ("frontend", "resolver", 53, Verdict::Open, "AWS exception"),
            (
                "task-1",
                "frontend",
                8080,
                Verdict::Blocked,
                "egress of private-service-sg",
            ),
            ("task-1", "internet", 443, Verdict::Open, "nat-1"),
            ("aurora", "internet", 443, Verdict::Blocked, "egress of db-sg"),
        ],
    );
}

#[test]
fn express_mutations_change_exactly_the_paths_they_should() {
    let text = express_text();

    // Private subnets: Express Mode makes an internal load balancer and gives no public IP.
    let public_subnets = "- subnets: ${vpc.publicSubnetIds}";
    assert!(text.contains(public_subnets));
    let private =
        program::from_yaml(&text.replace(public_subnets, "- subnets: ${vpc.privateSubnetIds}")).unwrap();
    assert_eq!(
        private.platform,
        Platform::Express {
            load_balancer: Scheme::Internal
        }
    );
    assert_eq!(private.public_entry(), None, "no public entry");
    assert_eq!(private.frontend().subnet.as_deref(), Some("private-1"));
    assert_eq!(private.frontend().public_ip, None);
    let (got, because) = verdict(&private, "internet", "alb", 443);
    assert_eq!(got, Verdict::Blocked);
    assert!(because.contains("an internal load balancer"), "{because}");
    // The tasks then reach Secrets Manager through NAT.
    let (got, because) = verdict(&private, "frontend", "internet", 443);
    assert_eq!(got, Verdict::Open);
    assert!(because.contains("nat-1"), "{because}");

    without_the_database_ingress_rule_only_the_database_is_cut_off(&text, "db-from-frontend", "frontend");

    // Express Mode's service group allows all outbound traffic: the program's HTTPS egress
    // rule does not decide whether the tasks reach Secrets Manager.
    let no_https =
        program::from_yaml(&program::without_resource(&text, "frontend-https-out").unwrap()).unwrap();
    let (got, because) = verdict(&no_https, "frontend", "internet", 443);
    assert_eq!(got, Verdict::Open);
    assert!(because.starts_with("egress express-service-all-out"), "{because}");

    // Without NAT the private service loses the internet; the public tasks do not need it.
    let no_nat =
        program::from_yaml(&program::with_config_default(&text, "natStrategy", "None").unwrap()).unwrap();
    assert_eq!(verdict(&no_nat, "frontend", "internet", 443).0, Verdict::Open);
    assert_eq!(verdict(&no_nat, "task-1", "internet", 443).0, Verdict::Blocked);
}

#[test]
fn the_express_load_balancer_and_internet_gateway_compile_to_translations() {
    let topology = express();
    let alb = firewall::load_balancer(&topology, topology.load_balancer().unwrap());
    assert!(
        alb.contains("iifname \"eni0\" ip daddr 10.0.0.50 tcp dport 443 dnat to 10.0.0.40:8080"),
        "{alb}"
    );
    assert!(
        alb.contains("oifname \"eni0\" ct status dnat snat to 10.0.0.50"),
        "{alb}"
    );
    assert!(
        alb.contains("iifname \"eni0\" ct state new counter drop"),
        "{alb}"
    );
    let router = firewall::vpc_router(&topology);
    for line in [
        "iifname \"igw0\" ip daddr 203.0.113.40 dnat to 10.0.0.40",
        "iifname \"igw0\" ip daddr 203.0.113.50 dnat to 10.0.0.50",
        "oifname \"igw0\" ip saddr 10.0.0.40 snat to 203.0.113.40",
        "oifname \"igw0\" ip saddr 10.0.0.50 snat to 203.0.113.50",
        "iifname \"igw0\" ct status dnat accept",
        "oifname \"igw0\" ip saddr != { 10.0.0.40, 10.0.0.50, 10.0.0.10 } counter drop",
    ] {
        assert!(router.contains(line), "{line}\n{router}");
    }
    let mut members = Members::new();
    members.insert("express-service-sg".into(), vec![topology.frontend().address]);
    let lb = firewall::security_groups(&topology, topology.load_balancer().unwrap(), &members);
    assert!(
        lb.contains("ip saddr 0.0.0.0/0 tcp dport 443 accept comment \"express-lb-https-in (express-lb-sg)"),
        "{lb}"
    );
    assert!(
        lb.contains("ip daddr @sg_express_service_sg tcp dport 8080 accept"),
        "{lb}"
    );
}

#[test]
fn a_program_with_no_frontend_or_two_is_an_error_naming_both_kinds() {
    let text = express_text();
    let none = program::without_resource(&text, "frontend").unwrap();
    let error = program::from_yaml(&none).unwrap_err().to_string();
    assert!(
        error.contains("aws:apprunner:Service") && error.contains("aws:ecs:ExpressGatewayService"),
        "{error}"
    );
}

/// Without `rule` (the database's only ingress), `frontend` no longer reaches Aurora, and the rule
/// is what the verdict names; its path to the private service is untouched.
fn without_the_database_ingress_rule_only_the_database_is_cut_off(text: &str, rule: &str, frontend: &str) {
    let mutated = program::from_yaml(&program::without_resource(text, rule).unwrap()).unwrap();
    let (got, because) = verdict(&mutated, frontend, "aurora", 5432);
    assert_eq!(got, Verdict::Blocked);
    assert!(because.starts_with("ingress of db-sg"), "{because}");
    assert_eq!(verdict(&mutated, frontend, "task-1", 8080).0, Verdict::Open);
}

/// The network diff of a pull request: a program that lets the private service's tasks reach the
/// database changes the App Runner contract at exactly that path, named with both rules.
#[test]
fn a_contract_names_each_path_a_change_opens_and_the_rules_that_open_it() {
    let text = program_text();
    let topology = real();
    let committed = reach::contract(&topology);
    assert_eq!(reach::contract_changes(&topology, &committed), Ok(Vec::new()));
    let opened = text.replacen(
        "resources:\n",
        "resources:\n\
         \x20 db-from-private-service:\n\
         \x20   type: aws:vpc:SecurityGroupIngressRule\n\
         \x20   properties:\n\
         \x20     securityGroupId: ${db-sg.id}\n\
         \x20     ipProtocol: tcp\n\
         \x20     fromPort: 5432\n\
         \x20     toPort: 5432\n\
         \x20     referencedSecurityGroupId: ${private-service-sg.id}\n\
         \x20 private-service-to-db:\n\
         \x20   type: aws:vpc:SecurityGroupEgressRule\n\
         \x20   properties:\n\
         \x20     securityGroupId: ${private-service-sg.id}\n\
         \x20     ipProtocol: tcp\n\
         \x20     fromPort: 5432\n\
         \x20     toPort: 5432\n\
         \x20     referencedSecurityGroupId: ${db-sg.id}\n",
        1,
    );
    let changes = reach::contract_changes(&program::from_yaml(&opened).unwrap(), &committed).unwrap();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert!(
        changes[0].starts_with("task-1 -> aurora:5432: blocked in the contract, open now:")
            && changes[0].contains("private-service-to-db")
            && changes[0].contains("db-from-private-service"),
        "{changes:#?}"
    );
    let closed = program::without_resource(&text, "db-from-connector").unwrap();
    let changes = reach::contract_changes(&program::from_yaml(&closed).unwrap(), &committed).unwrap();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert!(
        changes[0]
            .starts_with("apprunner -> aurora:5432: open in the contract, blocked now: ingress of db-sg"),
        "{changes:#?}"
    );
    let garbled = committed.replacen("open", "opened", 1);
    assert!(
        reach::contract_changes(&topology, &garbled)
            .unwrap_err()
            .contains("line")
    );
}

/// ECS sends SIGKILL a task's stopTimeout after SIGTERM: the private service needs its linger
/// (STOP_LINGER, 30 s by default) and its drain (up to 20 s) within it, in both programs.
#[test]
fn a_stopping_task_has_time_to_linger_and_drain() {
    let linger_and_drain = std::time::Duration::from_secs(30 + 20);
    for topology in [real(), express()] {
        assert!(
            topology.task_stop_timeout > linger_and_drain,
            "stopTimeout {:?} leaves no room for linger and drain ({linger_and_drain:?})",
            topology.task_stop_timeout
        );
    }
    let unset = program_text().replace("            stopTimeout: 60\n", "");
    assert_eq!(
        program::from_yaml(&unset).unwrap().task_stop_timeout,
        std::time::Duration::from_secs(30),
        "ECS's default"
    );
}
