//! The private service: runs as an ECS Fargate task reachable only inside the VPC, and answers
//! with a summary of its own task, proving which task a caller reached.

mod api;
mod config;
mod metadata;

use std::net::{Ipv4Addr, SocketAddr};

pub use api::app;
pub use config::Config;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.port));
    service_kit::serve(app(&config), addr, config.stop_linger).await
}
