//! Streaming replication between two throwaway clusters: how the tests model an Aurora writer and
//! its reader. Synchronous (`synchronous_standby_names`), because Aurora's instances share one
//! storage volume: a commit the writer acknowledged survives a failover, so it must be on the
//! standby before the primary answers.

use std::fs;

use anyhow::{Context, Result, bail};

use super::{Postgres, find_pg_bin, postgres_user_if_root, quote_literal};
use crate::net::{free_port, poll_until};

/// The standby's name in `pg_stat_replication` and `synchronous_standby_names`.
const STANDBY_NAME: &str = "standby";

impl Postgres {
    /// Starts a new cluster as a synchronous hot standby of this one (a base backup over TCP as
    /// the superuser, then streaming), and makes this one wait for it on every commit. The
    /// standby accepts logins and rejects writes until [`promote`](Self::promote)d.
    pub fn start_standby(&self) -> Result<Postgres> {
        let dir = tempfile::Builder::new()
            .prefix("harness-pg-standby-")
            .tempdir()
            .context("creating a temporary directory for the standby")?;
        let primary_conninfo = format!(
            "host=127.0.0.1 port={} user=postgres password={} application_name={STANDBY_NAME}",
            self.port, self.password
        );
        let mut standby = Postgres {
            dir,
            bin: find_pg_bin()?,
            as_postgres_user: postgres_user_if_root()?,
            port: 0,
            password: self.password.clone(),
            ca_cert: None,
            running: false,
            extra_settings: vec![
                "hot_standby = on".to_owned(),
                format!("primary_conninfo = {}", quote_literal(&primary_conninfo)),
                // After the primary restarts, reconnect within a moment rather than 5 s.
                "wal_retrieve_retry_interval = 200ms".to_owned(),
            ],
        };
        standby.give_to_postgres_user(standby.dir.path())?;
        let data = standby.data_dir().display().to_string();
        // A fast checkpoint: the default spreads it over minutes.
        standby
            .run_tool(
                "pg_basebackup",
                &[
                    "-D",
                    &data,
                    "-d",
                    &primary_conninfo,
                    "-X",
                    "stream",
                    "--checkpoint=fast",
                    "--no-sync",
                ],
            )
            .context("taking the standby's base backup")?;
        let signal = standby.data_dir().join("standby.signal");
        fs::write(&signal, "").context("writing standby.signal")?;
        standby.give_to_postgres_user(&signal)?;
        let mut started = Err(anyhow::anyhow!("the standby did not start"));
        for _ in 0..3 {
            standby.port = free_port()?;
            standby.write_settings()?;
            started = standby.pg_ctl_start();
            if started.is_ok() {
                break;
            }
        }
        started?;
        self.with_admin_client("postgres", |client| {
            // One statement each: ALTER SYSTEM refuses to run in the implicit transaction of a
            // multi-statement query.
            for statement in [
                format!("ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"),
                "ALTER SYSTEM SET synchronous_commit = 'on'".to_owned(),
                "SELECT pg_reload_conf()".to_owned(),
            ] {
                client
                    .batch_execute(&statement)
                    .with_context(|| format!("making the standby synchronous: {statement}"))?;
            }
            Ok(())
        })?;
        let synchronous = poll_until(
            std::time::Duration::from_secs(30),
            std::time::Duration::from_millis(100),
            || {
                self.with_admin_client("postgres", |client| {
                    Ok(client
                        .query_one(
                            "SELECT count(*) FROM pg_stat_replication \
                             WHERE application_name = $1 AND state = 'streaming' AND sync_state = 'sync'",
                            &[&STANDBY_NAME],
                        )?
                        .get::<_, i64>(0))
                })
                .ok()
                .filter(|count| *count == 1)
            },
        );
        if synchronous.is_none() {
            bail!(
                "the standby on port {} is not streaming synchronously; its log:\n{}",
                standby.port,
                standby.log()
            );
        }
        Ok(standby)
    }

    /// Waits until `standby` has replayed everything this primary has written. Aurora's instances
    /// share one volume, so a reader has every commit the writer made visible; streaming
    /// replication can lag behind that: while the standby reconnects after the primary crashed,
    /// and for a commit whose wait for the standby was cancelled (a terminated session: "the
    /// transaction has already committed locally, but might not have been replicated"). A
    /// failover of the model must wait for this, or it loses what Aurora cannot.
    pub fn wait_until_replayed_on(&self, standby: &Postgres, within: std::time::Duration) -> Result<()> {
        let written: String = self.with_admin_client("postgres", |client| {
            Ok(client.query_one("SELECT pg_current_wal_lsn()::text", &[])?.get(0))
        })?;
        let replayed = poll_until(within, std::time::Duration::from_millis(50), || {
            standby
                .with_admin_client("postgres", |client| {
                    let row = client
                        .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&written])?;
                    Ok(row.get::<_, Option<bool>>(0))
                })
                .ok()
                .flatten()
                .filter(|caught_up| *caught_up)
        });
        if replayed.is_none() {
            bail!(
                "the standby on port {} did not replay the primary's WAL up to {written} within {within:?}; its log:\n{}",
                standby.port,
                standby.log()
            );
        }
        Ok(())
    }

    /// Promotes a standby to a primary that accepts writes, waiting until it does.
    pub fn promote(&mut self) -> Result<()> {
        let data = self.data_dir().display().to_string();
        self.run_tool("pg_ctl", &["-D", &data, "-w", "-t", "60", "promote"])
            .context("promoting the standby")?;
        self.extra_settings
            .retain(|setting| !setting.starts_with("primary_conninfo"));
        Ok(())
    }

    /// Turns this server read-only without a restart: open sessions stay, and from their next
    /// transaction on every write fails with SQLSTATE 25006; new sessions report
    /// `transaction_read_only = on`.
    pub fn turn_read_only_in_place(&self) -> Result<()> {
        self.with_admin_client("postgres", |client| {
            client.batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")?;
            client.batch_execute("SELECT pg_reload_conf()")?;
            Ok(())
        })
    }

    /// Restarts this server as a reader: a fast shutdown ends every session, and it comes back
    /// accepting logins and rejecting every write (`default_transaction_read_only`) — how an
    /// Aurora writer returns after a failover. Settings changed with ALTER SYSTEM are dropped
    /// (it no longer waits for a standby).
    pub fn restart_as_reader(&mut self) -> Result<()> {
        if self.running {
            self.stop()?;
        }
        self.extra_settings
            .push("default_transaction_read_only = on".to_owned());
        self.write_settings()?;
        self.pg_ctl_start()
    }
}
