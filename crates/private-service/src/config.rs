use std::time::Duration;

use clap::Parser;

/// Private API on ECS Fargate: `GET /` answers with a summary of this task's metadata.
#[derive(Debug, Clone, Parser)]
#[command(name = "private-service", version)]
pub struct Config {
    /// Port to listen on (all interfaces).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Base URI of the ECS task metadata endpoint v4; ECS sets it in every container.
    #[arg(long, env = "ECS_CONTAINER_METADATA_URI_V4")]
    pub metadata_uri: Option<String>,

    /// Deadline for reading the task metadata (e.g. `500ms`, `2s`).
    #[arg(long, env = "METADATA_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub metadata_timeout: Duration,

    /// How long to keep answering after SIGTERM before draining (e.g. `30s`, `0s`). ECS
    /// deregisters a stopping task from Cloud Map as it sends SIGTERM, and resolvers keep the
    /// task's address for the record's TTL (10 s) plus Route 53's propagation; the task
    /// definition's stopTimeout must cover this and the 20 s drain.
    #[arg(long, env = "STOP_LINGER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub stop_linger: Duration,
}
