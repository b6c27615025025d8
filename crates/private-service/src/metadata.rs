//! Reading `${ECS_CONTAINER_METADATA_URI_V4}/task` and condensing it to what callers need.

use poem::http::StatusCode;
use poem_openapi::Object;
use serde::Deserialize;
use service_kit::Problem;
use service_kit::upstream::{Upstream, UpstreamError};

/// Which task answered: enough to tell tasks apart and to find one in the console.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct TaskSummary {
    #[oai(rename = "TaskArn")]
    pub task_arn: String,
    #[oai(rename = "Cluster")]
    pub cluster: String,
    #[oai(rename = "LaunchType")]
    pub launch_type: String,
    /// The first container's name.
    #[oai(rename = "ServiceName")]
    pub service_name: String,
    /// The first IPv4 address of the first container's networks.
    #[oai(rename = "IpAddress")]
    pub ip_address: String,
}

/// The parts of the documented response we read; everything else is ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TaskMetadata {
    #[serde(rename = "TaskARN")]
    task_arn: Option<String>,
    cluster: Option<String>,
    launch_type: Option<String>,
    #[serde(default)]
    containers: Vec<ContainerMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerMetadata {
    name: Option<String>,
    #[serde(default)]
    networks: Vec<NetworkMetadata>,
}

#[derive(Debug, Deserialize)]
struct NetworkMetadata {
    #[serde(rename = "IPv4Addresses", default)]
    ipv4_addresses: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("ECS_CONTAINER_METADATA_URI_V4 is not set: this process is not running as an ECS task")]
    NotConfigured,
    #[error("task metadata endpoint {0}")]
    Upstream(#[from] UpstreamError),
    #[error("task metadata has no {0}")]
    MissingField(&'static str),
}

impl MetadataError {
    pub fn to_problem(&self) -> Problem {
        match self {
            Self::Upstream(error) => error.to_problem("The ECS task metadata endpoint"),
            other => Problem::new(StatusCode::BAD_GATEWAY, other.to_string()),
        }
    }
}

pub struct MetadataClient {
    task_url: Option<String>,
    upstream: Upstream,
}

impl MetadataClient {
    pub fn new(base_uri: Option<&str>, upstream: Upstream) -> Self {
        let task_url = base_uri.map(|base| format!("{}/task", base.trim_end_matches('/')));
        Self { task_url, upstream }
    }

    /// Blocking: call it off the async executor.
    pub fn task_summary(&self) -> Result<TaskSummary, MetadataError> {
        let url = self.task_url.as_deref().ok_or(MetadataError::NotConfigured)?;
        let metadata: TaskMetadata = self.upstream.get_json(url)?;
        summarize(metadata)
    }
}

fn summarize(metadata: TaskMetadata) -> Result<TaskSummary, MetadataError> {
    let first_container = metadata.containers.into_iter().next();
    let (service_name, networks) = match first_container {
        Some(container) => (container.name, container.networks),
        None => (None, Vec::new()),
    };
    let ip_address = networks
        .into_iter()
        .find_map(|network| network.ipv4_addresses.into_iter().next());
    Ok(TaskSummary {
        task_arn: metadata.task_arn.ok_or(MetadataError::MissingField("TaskARN"))?,
        cluster: metadata.cluster.ok_or(MetadataError::MissingField("Cluster"))?,
        launch_type: metadata
            .launch_type
            .ok_or(MetadataError::MissingField("LaunchType"))?,
        service_name: service_name.ok_or(MetadataError::MissingField("Containers[0].Name"))?,
        ip_address: ip_address.ok_or(MetadataError::MissingField(
            "Containers[0].Networks[].IPv4Addresses[]",
        ))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<TaskSummary, MetadataError> {
        summarize(serde_json::from_str(json).expect("fixture is JSON"))
    }

    #[test]
    fn condenses_the_documented_fargate_response() {
        let summary = parse(include_str!(
            "../../../tests/harness/fixtures/ecs-task-metadata-v4-fargate.json"
        ))
        .expect("documented shape is complete");
        assert_eq!(
            summary,
            TaskSummary {
                task_arn: "arn:aws:ecs:us-east-1:111122223333:task/demo/0123456789abcdef0123456789abcdef"
                    .into(),
                cluster: "arn:aws:ecs:us-east-1:111122223333:cluster/demo".into(),
                launch_type: "FARGATE".into(),
                service_name: "private-service".into(),
                ip_address: "10.0.1.23".into(),
            }
        );
    }

    #[test]
    fn takes_the_first_network_that_has_an_address() {
        let summary = parse(
            r#"{"TaskARN":"t","Cluster":"c","LaunchType":"FARGATE","Containers":[{"Name":"n",
                "Networks":[{"IPv4Addresses":[]},{"IPv4Addresses":["10.0.2.9","10.0.2.10"]}]}]}"#,
        )
        .expect("complete");
        assert_eq!(summary.ip_address, "10.0.2.9");
    }

    #[test]
    fn names_the_missing_field() {
        let error = parse(r#"{"TaskARN":"t","Cluster":"c","LaunchType":"FARGATE","Containers":[]}"#)
            .expect_err("no containers");
        assert_eq!(error.to_string(), "task metadata has no Containers[0].Name");
        let error = parse(r#"{"Cluster":"c"}"#).expect_err("no arn");
        assert_eq!(error.to_string(), "task metadata has no TaskARN");
    }
}
