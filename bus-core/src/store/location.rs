//! [`StoreLocation`]: where the store lives, read from `[store] url` (or `path`): an embedded
//! SQLite file, or a PostgreSQL server.

use std::path::{Path, PathBuf};

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An embedded SQLite file (`sqlite:<path>`, or a plain path).
    Sqlite(PathBuf),
    /// A PostgreSQL server: libpq's URL (`postgres://user[:password]@host[:port]/db?sslmode=…`).
    Postgres(String),
}

impl StoreLocation {
    /// Read a location: `postgres://…` or `postgresql://…` is a server; `sqlite://<path>`,
    /// `sqlite:<path>` and anything else a SQLite file.
    pub fn parse(s: &str) -> StoreLocation {
        let t = s.trim();
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            return StoreLocation::Postgres(t.to_string());
        }
        let path = t
            .strip_prefix("sqlite://")
            .or_else(|| t.strip_prefix("sqlite:"))
            .unwrap_or(t);
        StoreLocation::Sqlite(PathBuf::from(path))
    }

    /// The location for messages and logs: the file's path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            StoreLocation::Sqlite(p) => p.display().to_string(),
            StoreLocation::Postgres(url) => redact(url),
        }
    }

    /// Whether there is a store to read: the SQLite file exists (a server is assumed to; opening
    /// it says otherwise).
    pub fn exists(&self) -> bool {
        match self {
            StoreLocation::Sqlite(p) => p.exists(),
            StoreLocation::Postgres(_) => true,
        }
    }

    /// The SQLite file, if the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            StoreLocation::Sqlite(p) => Some(p),
            StoreLocation::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// `url` with the password of its user part, and a `password=` parameter, replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut out = match rest.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{rest}"),
        },
        None => format!("{scheme}://{rest}"),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl From<&Path> for StoreLocation {
    fn from(p: &Path) -> Self {
        StoreLocation::parse(&p.display().to_string())
    }
}
impl From<&PathBuf> for StoreLocation {
    fn from(p: &PathBuf) -> Self {
        StoreLocation::from(p.as_path())
    }
}
impl From<PathBuf> for StoreLocation {
    fn from(p: PathBuf) -> Self {
        StoreLocation::from(p.as_path())
    }
}
impl From<&StoreLocation> for StoreLocation {
    fn from(l: &StoreLocation) -> Self {
        l.clone()
    }
}
impl From<&str> for StoreLocation {
    fn from(s: &str) -> Self {
        StoreLocation::parse(s)
    }
}
impl From<&String> for StoreLocation {
    fn from(s: &String) -> Self {
        StoreLocation::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::StoreLocation;

    #[test]
    fn locations_are_read_and_passwords_hidden() {
        let pg = StoreLocation::parse("postgres://bus:s3cret@db.local:5432/lienthong");
        assert_eq!(pg.display(), "postgres://bus:***@db.local:5432/lienthong");
        let q =
            StoreLocation::parse("postgres://db.local/l?user=bus&password=s3cret&sslmode=require");
        assert_eq!(
            q.display(),
            "postgres://db.local/l?user=bus&password=***&sslmode=require"
        );
        assert_eq!(
            StoreLocation::parse("sqlite:data/x.db"),
            StoreLocation::Sqlite("data/x.db".into())
        );
        assert_eq!(
            StoreLocation::parse("data/x.db"),
            StoreLocation::Sqlite("data/x.db".into())
        );
    }
}
