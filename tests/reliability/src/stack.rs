//! The frontend binary over its own database in a throwaway PostgreSQL, and the questions the
//! suites ask the database afterwards (how many rows, how many sessions).

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use harness::{Postgres, Service, ServiceCommand};

/// PostgreSQL, one fresh database, and the frontend (as a process) using it.
pub struct Stack {
    pub pg: Postgres,
    pub db: String,
    pub frontend: Service,
}

impl Stack {
    /// The frontend as the superuser with static credentials, plus `extra` environment.
    pub fn start(extra: &[(&str, &str)]) -> Result<Self> {
        let pg = Postgres::start()?;
        let db = pg.create_database()?;
        let frontend = frontend_command(&pg, &db, "postgres", pg.superuser_password())?
            .envs(extra.iter().copied())
            .spawn()?;
        Ok(Self { pg, db, frontend })
    }

    pub fn addr(&self) -> SocketAddr {
        addr_of(&self.frontend)
    }

    /// Rows in the visits table.
    pub fn rows(&self) -> Result<i64> {
        count(&self.pg, &self.db, "SELECT count(*) FROM access")
    }

    /// Every stored User-Agent.
    pub fn user_agents(&self) -> Result<Vec<Option<String>>> {
        user_agents(&self.pg, &self.db)
    }

    /// Sessions the frontend holds open on its database (`application_name = 'frontend'`).
    pub fn frontend_sessions(&self) -> Result<i64> {
        frontend_sessions(&self.pg, &self.db)
    }
}

/// The frontend's command with the database settings (static credentials) and nothing else.
pub fn frontend_command(pg: &Postgres, db: &str, user: &str, password: &str) -> Result<ServiceCommand> {
    Ok(ServiceCommand::new(harness::binary("frontend")?).envs([
        ("DB_HOST", pg.host().to_owned()),
        ("DB_PORT", pg.port().to_string()),
        ("DB_NAME", db.to_owned()),
        ("DB_USER", user.to_owned()),
        ("DB_PASS", password.to_owned()),
    ]))
}

/// `127.0.0.1:<port>` of a service.
pub fn addr_of(service: &Service) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, service.port()))
}

/// The single `bigint` a query answers.
pub fn count(pg: &Postgres, db: &str, sql: &str) -> Result<i64> {
    let sql = sql.to_owned();
    pg.with_admin_client(db, move |client| {
        let row = client.query_one(sql.as_str(), &[])?;
        Ok(row.try_get(0)?)
    })
    .with_context(|| format!("counting in database {db}"))
}

/// Sessions with `application_name = 'frontend'` on database `db`.
pub fn frontend_sessions(pg: &Postgres, db: &str) -> Result<i64> {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'frontend' AND datname = '{}'",
        db.replace('\'', "''")
    );
    count(pg, db, &sql)
}

/// Ends every session of the frontend on `db` (what a failover, a restart of the proxy, or an
/// operator does), so the pool has to open new connections. Returns how many were ended.
pub fn terminate_frontend_sessions(pg: &Postgres, db: &str) -> Result<i64> {
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'frontend' AND datname = '{}'",
        db.replace('\'', "''")
    );
    count(pg, db, &sql)
}

/// Every User-Agent in the visits table of `db`.
pub fn user_agents(pg: &Postgres, db: &str) -> Result<Vec<Option<String>>> {
    pg.with_admin_client(db, |client| {
        Ok(client
            .query("SELECT user_agent FROM access", &[])?
            .iter()
            .map(|row| row.get::<_, Option<String>>(0))
            .collect())
    })
    .with_context(|| format!("reading the visits of database {db}"))
}
