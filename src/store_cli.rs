//! `lienthong store migrate` and `lienthong store copy`: bring a store's schema to this build's
//! version, and copy every row of one store into another (SQLite to PostgreSQL, for a centre
//! that grows out of its file).

use std::process::ExitCode;

use clap::Subcommand;
use lienthong_core::registry::Settings;
use lienthong_core::store::db::Backend;
use lienthong_core::store::migrations::open_connection;
use lienthong_core::store::{StoreLocation, copy, migrations};

/// `lienthong store …`.
#[derive(Subcommand, Debug, Clone)]
pub enum StoreAction {
    /// Create the store if it does not exist and bring its schema to this build's version (every
    /// `lienthong run` does this too when it opens the store; run it first when the bus's own
    /// role may not change the schema). Prints the backend and the version.
    Migrate {
        /// The store (`postgres://…`, `sqlite:<path>`). Default: `[store] url` (or `path`)
        /// of the configuration.
        #[arg(long)]
        url: Option<String>,
    },
    /// Copy every row of one store into another, which must be empty (it is created and
    /// migrated first). The trace's hash chain is copied as stored: `lienthong audit verify`
    /// holds on the copy. Stop the bus first: rows written during the copy are not copied.
    Copy {
        /// The store to copy (`sqlite:<path>`, `postgres://…`). Default: the configuration's.
        #[arg(long)]
        from: Option<String>,
        /// The empty store to copy into (`postgres://…`, `sqlite:<path>`).
        #[arg(long)]
        to: String,
    },
}

/// Run a store command with the store of `settings` as the default.
pub fn run(settings: &Settings, action: &StoreAction) -> anyhow::Result<ExitCode> {
    let or_default = |u: &Option<String>| match u {
        Some(u) => StoreLocation::parse(u),
        None => settings.store.location(),
    };
    match action {
        StoreAction::Migrate { url } => {
            let at = or_default(url);
            let db = open_connection(&at)?;
            let (backend, version) = match db.backend() {
                Backend::Sqlite => ("sqlite", migrations::version(&db)?),
                Backend::Postgres => ("postgres", migrations::version(&db)?),
            };
            println!("store {at}: {backend}, schema version {version} (up to date)");
            Ok(ExitCode::SUCCESS)
        }
        StoreAction::Copy { from, to } => {
            let (from, to) = (or_default(from), StoreLocation::parse(to));
            if !from.exists() {
                anyhow::bail!("no store at {from}");
            }
            eprintln!("copying {from} into {to}");
            let report = copy::copy_store(&from, &to, |table, n| {
                eprintln!("  {table}: {n} row(s)");
            })?;
            let total: u64 = report.tables.iter().map(|(_, n)| n).sum();
            println!(
                "copied {total} row(s) of {} table(s) from {from} into {to}",
                report.tables.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
