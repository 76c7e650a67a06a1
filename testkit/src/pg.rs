//! A PostgreSQL database per test: created on the server the suite runs against (when
//! `LIENTHONG_TEST_STORE=postgres`), dropped when the test is done, so the suite runs the same
//! tests on the PostgreSQL store as on SQLite.

use lienthong_core::store::db::Db;
use lienthong_core::store::pg::PgConn;

/// The server when `LIENTHONG_TEST_PG` is not set: the machine's own, through TLS where the
/// server offers it (libpq's `prefer`), as the postgres superuser (scripts/ensure-postgres).
pub const DEFAULT_SERVER: &str = "postgres://postgres@localhost:5432/postgres";

/// Whether the tests run on PostgreSQL (`LIENTHONG_TEST_STORE=postgres`).
pub fn wanted() -> bool {
    std::env::var("LIENTHONG_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The server's URL (any database of it): `LIENTHONG_TEST_PG`, or [`DEFAULT_SERVER`].
pub fn server_url() -> String {
    std::env::var("LIENTHONG_TEST_PG").unwrap_or_else(|_| DEFAULT_SERVER.to_string())
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A database name from `name` (lower case letters, digits and `_`, at most 63 bytes).
fn db_name(name: &str) -> String {
    let mut n: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    n.truncate(63);
    n
}

/// Create the database `name` (dropped first if a killed run left it) on the suite's server
/// ([`server_url`]) and return its URL.
pub fn create(name: &str) -> anyhow::Result<String> {
    create_on(&server_url(), name)
}

/// Create the database `name` on `server` (dropped first if a killed run left it) and return
/// its URL.
pub fn create_on(server: &str, name: &str) -> anyhow::Result<String> {
    let db = db_name(name);
    let admin = Db::Pg(PgConn::connect(server)?);
    admin.execute_batch(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
    admin.execute_batch(&format!("CREATE DATABASE {db}"))?;
    Ok(with_database(server, &db))
}

/// Drop the database of `url` on the suite's server (its connections closed by force); errors
/// are ignored (a test's clean-up).
pub fn drop_database(url: &str) {
    drop_on(&server_url(), url);
}

/// Drop the database of `url` through `server` (its connections closed by force); errors are
/// ignored (a clean-up).
pub fn drop_on(server: &str, url: &str) {
    let Some(db) = url
        .split('?')
        .next()
        .and_then(|h| h.rsplit('/').next())
        .map(db_name)
    else {
        return;
    };
    if let Ok(admin) = PgConn::connect(server) {
        let _ = Db::Pg(admin).execute_batch(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u@h:5432/t1?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://u@h", "t1"),
            "postgres://u@h/t1"
        );
    }
}
