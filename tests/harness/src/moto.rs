//! `moto_server` on loopback: a local AWS Secrets Manager for tests.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::net::{find_in_path, free_port, is_executable, poll_until, tail};

const INSTALL_HINT: &str = "moto_server was not found: from the workspace root run \
     `python3 -m venv .venv && .venv/bin/pip install -r tests/harness/requirements.txt` \
     (or set $MOTO_SERVER to its path)";

/// An `Authorization` header scoped to Secrets Manager in us-east-1, as an SDK would send.
pub const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
     Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, \
     SignedHeaders=host;x-amz-target, Signature=0";

/// A running `moto_server -H 127.0.0.1 -p <free port>`, killed on drop.
///
/// Found at `$MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server`, else on `$PATH`.
/// moto does not check request signatures, so any static credentials work.
pub struct Moto {
    child: Child,
    port: u16,
    /// Holds moto.log (and is moto's working directory).
    _dir: TempDir,
    agent: ureq::Agent,
}

impl Moto {
    /// Starts moto and waits (up to 60 s) until it answers Secrets Manager calls.
    pub fn start() -> Result<Self> {
        let program = find_moto_server()?;
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_once(&program) {
                Ok(moto) => return Ok(moto),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("moto_server did not start")))
    }

    fn start_once(program: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("harness-moto-")
            .tempdir()
            .context("creating a temporary directory for moto")?;
        let log_path = dir.path().join("moto.log");
        let log = File::create(&log_path).context("creating moto.log")?;
        let port = free_port()?;
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("running {}. {INSTALL_HINT}", program.display()))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut moto = Self {
            child,
            port,
            _dir: dir,
            agent,
        };
        let ready = poll_until(Duration::from_secs(60), Duration::from_millis(100), || {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Some(Err(anyhow!("moto_server exited early ({status})")));
            }
            moto.call("ListSecrets", &json!({})).ok().map(|_| Ok(()))
        });
        match ready {
            Some(Ok(())) => Ok(moto),
            Some(Err(error)) => Err(error.context(tail(&log_path, 20))),
            None => bail!(
                "moto_server did not answer within 60 s on port {port}:\n{}",
                tail(&log_path, 20)
            ),
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points an AWS SDK at this moto: the Secrets Manager endpoint,
    /// region `us-east-1`, static test credentials, and no shared config files or instance
    /// metadata (so nothing from `~/.aws` or IMDS leaks in).
    pub fn aws_env(&self) -> Vec<(String, String)> {
        // Empty files: the SDK reads nothing from them and, unlike a missing path, warns not.
        let nowhere = "/dev/null".to_string();
        [
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", self.endpoint()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_CONFIG_FILE", nowhere.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE", nowhere),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    /// Creates secret `name` holding `secret_string`; returns its ARN.
    pub fn create_secret(&self, name: &str, secret_string: &str) -> Result<String> {
        let answer = self.call(
            "CreateSecret",
            &json!({ "Name": name, "SecretString": secret_string }),
        )?;
        answer["ARN"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("CreateSecret answered without an ARN: {answer}"))
    }

    /// Stores a new current value for secret `id` (name or ARN), as a rotation would.
    pub fn put_secret_value(&self, id: &str, secret_string: &str) -> Result<()> {
        self.call(
            "PutSecretValue",
            &json!({ "SecretId": id, "SecretString": secret_string }),
        )?;
        Ok(())
    }

    /// Any Secrets Manager action (`X-Amz-Target: secretsmanager.<action>`, JSON 1.1 protocol).
    /// A non-2xx answer is an error carrying moto's body.
    pub fn call(&self, action: &str, request: &Value) -> Result<Value> {
        let mut response = self
            .agent
            .post(self.endpoint())
            .header("X-Amz-Target", format!("secretsmanager.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            // moto routes a request to a service by the credential scope of its signature
            // (without one it answers as S3); the signature itself is not checked.
            .header("Authorization", AUTHORIZATION)
            .send(request.to_string())
            .with_context(|| format!("calling secretsmanager.{action} on moto"))?;
        let status = response.status();
        let body = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to secretsmanager.{action}"))?;
        if !status.is_success() {
            bail!("secretsmanager.{action} answered {status}: {body}");
        }
        serde_json::from_str(&body)
            .with_context(|| format!("secretsmanager.{action} answered non-JSON: {body}"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_moto_server() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        let path = PathBuf::from(path);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!(
            "$MOTO_SERVER={} is not an executable. {INSTALL_HINT}",
            path.display()
        );
    }
    let venv = crate::workspace_root().join(".venv/bin/moto_server");
    if is_executable(&venv) {
        return Ok(venv);
    }
    find_in_path("moto_server").ok_or_else(|| anyhow!("{INSTALL_HINT}"))
}
