//! The VPC of a Pulumi program on one machine (issue 11): `pulumi/Pulumi.yaml` (App Runner)
//! or `pulumi/ecs-express/Pulumi.yaml` (ECS Express Mode), chosen by `PULUMI_PROGRAM`.
//!
//! One [`Topology`] value is read from the Pulumi program ([`program`]); [`reach`] says which
//! paths it opens and which rule decides each; [`firewall`] compiles it to nftables; [`twin`]
//! turns it into network namespaces, bridges, routes, a NAT host, the VPC resolver ([`resolver`]),
//! Aurora's lifecycle ([`aurora`]), and runs the real system in it. Tests name nodes (`internet`, the frontend's host from
//! [`Topology::frontend`], `aurora`, `task-1`, ...), never addresses.
//!
//! Everything the twin creates carries the prefix [`PREFIX`] (namespaces `avt-*`, nft tables
//! `avt_*` inside them, `/etc/netns/avt-*`, `$TMPDIR/avt-twin-*`), and only such things are ever
//! removed.

pub mod aurora;
pub mod control;
pub mod firewall;
pub mod ns;
pub mod program;
pub mod reach;
pub mod resolver;
pub mod stack;
pub mod topology;
pub mod twin;

pub use topology::Topology;
pub use twin::Twin;

/// The prefix of every namespace (and `/etc/netns` entry) the twin creates.
pub const PREFIX: &str = "avt-";

/// The prefix of the twin's working directory in `$TMPDIR` (Aurora's data, logs, certificates).
pub const WORKDIR_PREFIX: &str = "avt-twin-";

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;

/// Fails (never skips) when the twin cannot run here, saying what is needed.
pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!(
            "the VPC twin needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces, \
             veths, bridges and nftables tables; run these tests as root (CI does), or leave them out \
             with the nextest filter `not binary_id(vpc-twin::twin)`"
        );
    }
    for tool in ["ip", "nft", "dnsmasq", "unbound"] {
        if !["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|dir| std::path::Path::new(dir).join(tool).exists())
        {
            anyhow::bail!(
                "the VPC twin needs `{tool}`: apt-get install -y iproute2 nftables dnsmasq-base unbound (tests/setup installs them)"
            );
        }
    }
    Ok(())
}
