//! The seed as a process: the project's original frontend (Python, FastAPI + psycopg 3, a new
//! database connection for every request; tests/bench/seed/main.py says where it comes from and
//! what differs), run by uvicorn from the venv tests/bench/setup.sh makes, as a peer the benchmark
//! can load like the Rust frontend.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Result, bail};
use harness::{Service, ServiceCommand};

/// Where the seed finds its database (the original's DB_* variables).
pub struct SeedDatabase<'a> {
    pub host: &'a str,
    pub port: u16,
    pub name: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

/// The seed listening on `127.0.0.1:<free port>`; it and its process group are killed on drop.
pub struct Seed {
    service: Service,
}

impl Seed {
    /// Starts the seed against `database` and waits until its `GET /health` answers 200.
    pub fn start(database: &SeedDatabase) -> Result<Self> {
        let python = venv().join("bin/python");
        if !python.is_file() {
            bail!(
                "the seed's venv is missing ({}): run tests/bench/setup.sh",
                python.display()
            );
        }
        let service = ServiceCommand::new(python)
            .args([harness::workspace_root().join("tests/bench/seed/main.py")])
            .env("DB_HOST", database.host)
            .env("DB_PORT", database.port.to_string())
            .env("DB_NAME", database.name)
            .env("DB_USER", database.user)
            .env("DB_PASS", database.password)
            // Output reaches the harness's log as it is written, not in 8 KiB blocks.
            .env("PYTHONUNBUFFERED", "1")
            // No __pycache__ left in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .spawn()?;
        Ok(Self { service })
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        self.service.url(path)
    }
}

#[cfg(test)]
impl Seed {
    fn pid(&self) -> u32 {
        self.service.pid()
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        // The harness starts it as the leader of its own process group and kills only the leader;
        // killing the group also ends any process uvicorn or Python forked. The leader is not yet
        // reaped here, so its id cannot have been reused. Then `Service`'s drop reaps it.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.service.pid())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The venv tests/bench/setup.sh installs the seed into (the same default and override).
fn venv() -> PathBuf {
    std::env::var_os("BENCH_SEED_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| harness::workspace_root().join("target/bench-seed-venv"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::Postgres;
    use serde_json::Value;

    const DATABASE: &str = "apprunnerdemo";
    const ROLE: &str = "apprunnerdemo";
    const PASSWORD: &str = "seed-test-password-not-secret";

    #[test]
    fn the_seed_registers_a_visit_lists_it_and_dies_with_its_handle() -> Result<()> {
        let pg = Postgres::start()?;
        pg.create_role(ROLE, PASSWORD)?;
        pg.create_named_database(DATABASE, ROLE)?;
        // The table as the original's CDK stack created it (lib/apprunner-vpc-demo-stack.ts).
        let mut admin = pg.admin_client(DATABASE)?;
        admin.batch_execute(&format!(
            "CREATE TABLE access (last_update TIMESTAMP, user_agent VARCHAR (250)); \
             ALTER TABLE access OWNER TO {ROLE}"
        ))?;

        let seed = Seed::start(&SeedDatabase {
            host: pg.host(),
            port: pg.port(),
            name: DATABASE,
            user: ROLE,
            password: PASSWORD,
        })?;
        let mut visit = ureq::get(seed.url("/"))
            .header("User-Agent", "seed-test/1")
            .call()?;
        assert_eq!(visit.status(), 200);
        let answer: Value = serde_json::from_str(&visit.body_mut().read_to_string()?)?;
        assert_eq!(answer, serde_json::json!({"Response": "Registered request"}));

        let agents: Vec<String> = admin
            .query("SELECT user_agent FROM access", &[])?
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            agents,
            ["seed-test/1"],
            "GET / stores one row with the visitor's User-Agent"
        );

        let mut recent = ureq::get(seed.url("/recent-visits")).call()?;
        assert_eq!(recent.status(), 200);
        let listed: Value = serde_json::from_str(&recent.body_mut().read_to_string()?)?;
        assert_eq!(listed["Response"][0]["user_agent"], "seed-test/1", "{listed}");
        assert!(
            listed["Response"][0]["timestamp"]
                .as_str()
                .is_some_and(|time| !time.is_empty()),
            "{listed}"
        );

        let pid = seed.pid();
        drop(seed);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the seed (pid {pid}) outlived its handle"
        );
        Ok(())
    }
}
