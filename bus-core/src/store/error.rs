//! The store's error type.

use super::db::DbError;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database (SQLite or PostgreSQL) failed.
    #[error("store: {0}")]
    Db(#[from] DbError),
    /// The directory of the file could not be created, or a thread of the store could not be
    /// started.
    #[error("store: cannot create {0}: {1}")]
    Io(String, std::io::Error),
    /// The file was written by a newer lienthong: its schema version is past this build's.
    #[error(
        "store: the file's schema is version {found}, newer than this build knows ({known}); run the lienthong that wrote it"
    )]
    TooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The latest migration this build has.
        known: i64,
    },
    /// The group-commit writer failed the write, or is gone (its text).
    #[error("store: {0}")]
    Writer(String),
    /// This handle has no group-commit writer to write through ([`super::connection::Store::with_writer`]).
    #[error("store: this handle cannot write (no group-commit writer attached)")]
    ReadOnly,
    /// A blocking read task failed (panicked or was cancelled).
    #[error("store: the read task failed: {0}")]
    Task(String),
}
