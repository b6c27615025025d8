//! Embedded migrations (refinery), applied on the first connection of each process.

use postgres::Client;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary but fixed: serialises migrations across instances starting at the same moment.
const MIGRATION_LOCK: i64 = 0x6170_7072_756e_6e72;

/// Applies pending migrations; safe to run concurrently from several instances.
pub fn migrate(client: &mut Client) -> Result<(), String> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|error| format!("taking the migration lock: {error}"))?;
    let applied = embedded::migrations::runner().run(client);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    let report = applied.map_err(|error| error.to_string())?;
    unlocked.map_err(|error| format!("releasing the migration lock: {error}"))?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, "schema migration applied");
    }
    Ok(())
}
