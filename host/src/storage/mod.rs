//! Storage: where the host keeps what must outlive it, opened in one place.
//!
//! `[storage]` names a backend: one SQLite file (`outbox.sqlite` in
//! `storage.dir`) for a host on its own, or one PostgreSQL database that
//! several hosts share. [`Location::of`] reads that once; [`open_sqlite`]
//! and [`postgres_target`] open what it names with the settings every
//! connection of the host uses. What is kept there is the business of the
//! boxes above: the outbox and the throttles (`delivery::store`), and the
//! providers' rotating credentials ([`tokens`]), which live here because
//! they are nothing but sealed rows with a lease.
//!
//! This box imports only the config and `sanitize`: it knows neither
//! providers nor delivery.

pub mod pg_tls;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Secret, StorageBackend, StorageConfig};

/// The file in `storage.dir` that holds the outbox, the throttles' send
/// history and the token store, on the SQLite backend.
pub const OUTBOX_FILE: &str = "outbox.sqlite";

/// How long a connection attempt to PostgreSQL waits, unless
/// `storage.postgres_url` says (`connect_timeout`).
pub const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The configured storage, found but not opened.
#[derive(Debug, Clone)]
pub enum Location {
    /// One SQLite file, for a host on its own.
    Sqlite(PathBuf),
    /// One PostgreSQL database shared by several hosts.
    Postgres {
        /// `storage.postgres_url`: it may hold a password.
        url: Secret,
        /// `storage.lease`: how long a dead host's claims outlive it.
        lease: Duration,
    },
}

impl Location {
    /// Where `[storage]` says the host keeps its state.
    pub fn of(storage: &StorageConfig) -> Location {
        match &storage.backend {
            StorageBackend::Sqlite => Location::Sqlite(storage.dir.join(OUTBOX_FILE)),
            StorageBackend::Postgres { url, lease } => Location::Postgres {
                url: url.clone(),
                lease: *lease,
            },
        }
    }

    /// The SQLite file, when that is the backend and it does not exist yet
    /// (nothing was ever stored with this config).
    pub fn missing_file(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) if !path.exists() => Some(path),
            _ => None,
        }
    }
}

/// Opens the SQLite file at `path`, creating it and its folder if missing,
/// in WAL mode with `synchronous = FULL` (a receipt promises the message is
/// on disk, even across a power loss) and a 5 s busy timeout.
pub fn open_sqlite(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    configure_sqlite(rusqlite::Connection::open(path)?)
}

/// The settings of [`open_sqlite`], on a connection opened elsewhere (an
/// in-memory one, in tests).
pub fn configure_sqlite(conn: rusqlite::Connection) -> rusqlite::Result<rusqlite::Connection> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Parses `storage.postgres_url` into a client config and its TLS
/// connector ([`pg_tls::target`]), with the connect timeout every host
/// connection has and `application` as the session's `application_name`.
/// Errors never quote the URL.
pub fn postgres_target(url: &Secret, application: &str) -> Result<pg_tls::Target, String> {
    let mut target = pg_tls::target(url.expose())?;
    if target.config.get_connect_timeout().is_none() {
        target.config.connect_timeout(PG_CONNECT_TIMEOUT);
    }
    target.config.application_name(application);
    Ok(target)
}
