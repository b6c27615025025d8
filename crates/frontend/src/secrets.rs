//! Database credentials from AWS Secrets Manager.
//!
//! The SDK is built without its default TLS stack (aws-lc, which needs C and breaks static musl
//! builds) and given a rustls + ring HTTPS client instead. The standard endpoint overrides
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`) and credential chain apply as usual.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::Client;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use secrecy::SecretString;
use serde::Deserialize;

/// A secret's fields, in either shape: RDS-managed (`username`, `password`) or CDK-style, which
/// also carries `host`, `port` and `dbname`.
#[derive(Debug, Deserialize)]
pub struct DbSecret {
    pub username: String,
    pub password: SecretString,
    pub host: Option<String>,
    #[serde(default, deserialize_with = "port_number_or_string")]
    pub port: Option<u16>,
    pub dbname: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// No answer at all: in AWS this is nearly always the network path, so the message says
    /// which (the most common mistake with App Runner's VPC egress).
    #[error(
        "Secrets Manager is unreachable (reading secret {secret_id}: {message}). With VPC egress \
         (App Runner egressType VPC) every outbound call leaves through the VPC: its subnets need a route \
         to a NAT gateway, or the VPC a secretsmanager interface VPC endpoint with private DNS, and the \
         security group must allow HTTPS (443) out"
    )]
    Unreachable { secret_id: String, message: String },
    #[error("reading secret {secret_id} from Secrets Manager failed: {message}")]
    Fetch { secret_id: String, message: String },
    #[error("secret {secret_id} has no SecretString")]
    NotAString { secret_id: String },
    // serde's message names the field but never echoes the secret's content.
    #[error("secret {secret_id} is not a database secret: {reason}")]
    Malformed { secret_id: String, reason: String },
}

/// A failed read is answered from memory for this long, so a missing secret or a denied call
/// does not turn every connection attempt into a Secrets Manager request.
const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// Reads one secret, blocking. It runs its own single-threaded runtime for the SDK, so callers
/// (pool threads) never depend on the server's runtime still running, e.g. during shutdown.
pub struct SecretsClient {
    runtime: tokio::runtime::Runtime,
    client: Client,
    secret_id: String,
    last_failure: Mutex<Option<(Instant, SecretError)>>,
}

impl SecretsClient {
    /// Builds the client from the standard AWS configuration; no network call happens here.
    /// Must not be called from async code (it blocks on its own runtime).
    pub fn new(secret_id: String) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime.block_on(Self::client(&secret_id));
        Ok(Self {
            runtime,
            client,
            secret_id,
            last_failure: Mutex::new(None),
        })
    }

    async fn client(secret_id: &str) -> Client {
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_timeout(Duration::from_secs(10))
            .build();
        // AWS_REGION / AWS_DEFAULT_REGION (App Runner and ECS set them), then the shared config
        // file; failing both, a secret ARN names its own region. No instance-metadata lookup:
        // neither platform has one, and it would stall the first request on a timeout.
        let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(ProfileFileRegionProvider::new())
            .or_else(region_of_arn(secret_id));
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .http_client(https)
            .timeout_config(timeouts)
            .load()
            .await;
        Client::new(&config)
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// Reads and parses the secret. Blocking: call it from a thread outside any async runtime.
    pub fn fetch(&self) -> Result<DbSecret, SecretError> {
        let mut last_failure = self.last_failure.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, error)) = last_failure.as_ref()
            && at.elapsed() < FAILURE_HOLD
        {
            return Err(error.clone());
        }
        let result = self.runtime.block_on(self.read());
        match &result {
            Err(error @ SecretError::Unreachable { .. }) => {
                tracing::error!(%error, "reading the database secret failed; not asking again for {FAILURE_HOLD:?}");
            }
            Err(error) => {
                tracing::warn!(%error, "reading the database secret failed; not asking again for {FAILURE_HOLD:?}");
            }
            Ok(_) => {}
        }
        *last_failure = result.as_ref().err().map(|error| (Instant::now(), error.clone()));
        result
    }

    async fn read(&self) -> Result<DbSecret, SecretError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|error| {
                use aws_sdk_secretsmanager::error::SdkError;
                let unreachable = match &error {
                    SdkError::TimeoutError(_) => true,
                    SdkError::DispatchFailure(failure) => failure.is_io() || failure.is_timeout(),
                    _ => false,
                };
                let secret_id = self.secret_id.clone();
                let message = aws_sdk_secretsmanager::error::DisplayErrorContext(error).to_string();
                if unreachable {
                    SecretError::Unreachable { secret_id, message }
                } else {
                    SecretError::Fetch { secret_id, message }
                }
            })?;
        let text = output.secret_string().ok_or_else(|| SecretError::NotAString {
            secret_id: self.secret_id.clone(),
        })?;
        parse(text).map_err(|reason| SecretError::Malformed {
            secret_id: self.secret_id.clone(),
            reason,
        })
    }
}

/// `arn:aws:secretsmanager:<region>:<account>:secret:<name>` -> `<region>`.
fn region_of_arn(secret_id: &str) -> Option<Region> {
    let mut parts = secret_id.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_partition), Some("secretsmanager"), Some(region)) if !region.is_empty() => {
            Some(Region::new(region.to_owned()))
        }
        _ => None,
    }
}

fn parse(text: &str) -> Result<DbSecret, String> {
    serde_json::from_str(text).map_err(|error| {
        // Position-free wording: serde_json's messages can quote the offending value.
        match error.classify() {
            serde_json::error::Category::Data => {
                "missing username/password or a field of the wrong type".to_owned()
            }
            _ => "not a JSON object".to_owned(),
        }
    })
}

fn port_number_or_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Option::<Port>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Port::Number(port)) => Ok(Some(port)),
        Some(Port::Text(text)) => text.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn reads_the_rds_managed_shape() {
        let secret = parse(r#"{"username":"postgres","password":"p@ss"}"#).expect("valid");
        assert_eq!(secret.username, "postgres");
        assert_eq!(secret.password.expose_secret(), "p@ss");
        assert!(secret.host.is_none() && secret.port.is_none() && secret.dbname.is_none());
    }

    #[test]
    fn reads_the_cdk_shape_with_port_as_number_or_string() {
        let secret = parse(
            r#"{"username":"u","password":"p","engine":"postgres","host":"db.local","port":5433,"dbname":"demo"}"#,
        )
        .expect("valid");
        assert_eq!(
            (secret.host.as_deref(), secret.port, secret.dbname.as_deref()),
            (Some("db.local"), Some(5433), Some("demo"))
        );
        let secret = parse(r#"{"username":"u","password":"p","port":"6543"}"#).expect("valid");
        assert_eq!(secret.port, Some(6543));
    }

    #[test]
    fn errors_never_echo_the_secret() {
        let reason = parse(r#"{"username":"u","password":12345678}"#).expect_err("wrong type");
        assert!(!reason.contains("12345678"), "{reason}");
        let reason = parse("hunter2-not-json").expect_err("not json");
        assert!(!reason.contains("hunter2"), "{reason}");
    }

    #[test]
    fn a_secret_arn_names_its_region() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-1-AbCdEf";
        assert_eq!(region_of_arn(arn), Some(Region::new("eu-west-1")));
        assert_eq!(
            region_of_arn("arn:aws-cn:secretsmanager:cn-north-1:1:secret:x"),
            Some(Region::new("cn-north-1"))
        );
        assert_eq!(region_of_arn("demo/db"), None);
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let secret = parse(r#"{"username":"u","password":"sentinel-password"}"#).expect("valid");
        assert!(!format!("{secret:?}").contains("sentinel-password"));
    }
}
