//! Provider credentials that rotate, kept in the storage backend.
//!
//! Bitrix24's OAuth pair is single use: once a refresh answers, the refresh
//! token sent and the access token issued with it are dead. A pair kept in
//! memory only dies with the process, and hosts refreshing on their own
//! invalidate each other's. So the current pair lives here, one row per
//! provider account, sealed by the provider (this module never sees a
//! token in the clear), with a refresh lock beside it.
//!
//! The lock is a lease on the row (`locked_by` until `locked_until_ms`),
//! not a transaction held open: a refresh is an HTTP call of up to the
//! client's timeout, and an open SQLite write transaction would stall the
//! outbox meanwhile. A host that dies holding the lease loses it when the
//! lease passes. On PostgreSQL the lease counts on the database's clock.
//!
//! SQLite: the table `oauth_tokens` in `outbox.sqlite`. PostgreSQL:
//! `botbox_oauth_tokens` beside the shared outbox. Each is created here on
//! first use, so hosts that never use OAuth never touch it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Location;
use crate::config::{Secret, StorageConfig};

/// Why the token store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    /// The SQLite file failed.
    #[error("the token store in `{path}` failed: {reason}")]
    Sqlite {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// Never the connection string: it may hold a password.
    #[error(
        "the token store in PostgreSQL (`storage.postgres_url`) failed: {0}; check that the server is running"
    )]
    Postgres(String),
}

/// One stored row: a sealed pair (none before the first refresh) and the
/// version it was sealed for.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// Bumped by every save: a save for an older version is refused.
    pub version: i64,
    /// `(nonce, ciphertext)`, as the provider sealed them.
    pub sealed: Option<(Vec<u8>, Vec<u8>)>,
}

/// What asking for the refresh lock came to.
#[derive(Debug)]
pub enum Lock {
    /// This host holds the lease; the row as it is now, read under it.
    Taken(StoredRow),
    /// Another host holds it.
    Busy,
}

enum Backend {
    Sqlite(PathBuf),
    Postgres(Secret),
}

/// Rotating provider credentials, sealed, one row per provider account, with a refresh lease.
pub struct TokenStore {
    backend: Backend,
    /// Who holds the lease, in `locked_by`: unique per process.
    holder: String,
    pg: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS oauth_tokens (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0,
    nonce BLOB,
    sealed BLOB,
    locked_by TEXT,
    locked_until_ms INTEGER
);
";

const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS botbox_oauth_tokens (
    key TEXT PRIMARY KEY,
    version BIGINT NOT NULL DEFAULT 0,
    nonce BYTEA,
    sealed BYTEA,
    locked_by TEXT,
    locked_until_ms BIGINT
);
";

/// The database's clock in Unix milliseconds.
const PG_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn row_from(version: i64, nonce: Option<Vec<u8>>, sealed: Option<Vec<u8>>) -> StoredRow {
    StoredRow {
        version,
        sealed: nonce.zip(sealed),
    }
}

impl TokenStore {
    /// The store of the configured backend. Connects on first use.
    pub fn from_config(storage: &StorageConfig) -> Arc<TokenStore> {
        let backend = match Location::of(storage) {
            Location::Sqlite(path) => Backend::Sqlite(path),
            Location::Postgres { url, .. } => Backend::Postgres(url),
        };
        Self::new(backend)
    }

    /// A store in one SQLite file.
    pub fn sqlite(path: PathBuf) -> Arc<TokenStore> {
        Self::new(Backend::Sqlite(path))
    }

    fn new(backend: Backend) -> Arc<TokenStore> {
        Arc::new(TokenStore {
            backend,
            holder: format!(
                "{}-{}-{:016x}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
                std::process::id(),
                rand::random::<u64>()
            ),
            pg: tokio::sync::Mutex::new(None),
        })
    }

    /// The row for `key`, if there is one.
    pub async fn load(&self, key: &str) -> Result<Option<StoredRow>, TokenStoreError> {
        let key = key.to_string();
        match &self.backend {
            Backend::Sqlite(path) => {
                self.sqlite_job(path, move |c| {
                    use rusqlite::OptionalExtension;
                    c.query_row(
                        "SELECT version, nonce, sealed FROM oauth_tokens WHERE key = ?1",
                        [&key],
                        |r| Ok(row_from(r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                })
                .await
            }
            Backend::Postgres(_) => {
                let rows = self
                    .pg_query(
                        "SELECT version, nonce, sealed FROM botbox_oauth_tokens WHERE key = $1",
                        &[&key],
                    )
                    .await?;
                Ok(rows.first().map(|r| row_from(r.get(0), r.get(1), r.get(2))))
            }
        }
    }

    /// Takes the refresh lock for `lease`, unless another host holds it.
    pub async fn try_lock(&self, key: &str, lease: Duration) -> Result<Lock, TokenStoreError> {
        let lease_ms = lease.as_millis() as i64;
        let key = key.to_string();
        let holder = self.holder.clone();
        let row = match &self.backend {
            Backend::Sqlite(path) => {
                self.sqlite_job(path, move |c| {
                    use rusqlite::OptionalExtension;
                    let now = now_ms();
                    c.query_row(
                        "INSERT INTO oauth_tokens (key, version, locked_by, locked_until_ms)
                         VALUES (?1, 0, ?2, ?3 + ?4)
                         ON CONFLICT (key) DO UPDATE SET
                             locked_by = excluded.locked_by,
                             locked_until_ms = excluded.locked_until_ms
                         WHERE oauth_tokens.locked_until_ms IS NULL
                            OR oauth_tokens.locked_until_ms < ?3
                         RETURNING version, nonce, sealed",
                        rusqlite::params![key, holder, now, lease_ms],
                        |r| Ok(row_from(r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()
                })
                .await?
            }
            Backend::Postgres(_) => {
                let sql = format!(
                    "INSERT INTO botbox_oauth_tokens (key, version, locked_by, locked_until_ms)
                     VALUES ($1, 0, $2, {PG_NOW_MS} + $3)
                     ON CONFLICT (key) DO UPDATE SET
                         locked_by = EXCLUDED.locked_by,
                         locked_until_ms = EXCLUDED.locked_until_ms
                     WHERE botbox_oauth_tokens.locked_until_ms IS NULL
                        OR botbox_oauth_tokens.locked_until_ms < {PG_NOW_MS}
                     RETURNING version, nonce, sealed"
                );
                let rows = self.pg_query(&sql, &[&key, &holder, &lease_ms]).await?;
                rows.first().map(|r| row_from(r.get(0), r.get(1), r.get(2)))
            }
        };
        Ok(row.map_or(Lock::Busy, Lock::Taken))
    }

    /// Writes the sealed pair as `version` and releases this host's lock.
    /// Written even if the lease passed meanwhile: the portal has already
    /// replaced the pair, so this one is the only one that works.
    pub async fn save_and_unlock(
        &self,
        key: &str,
        version: i64,
        nonce: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<(), TokenStoreError> {
        let key = key.to_string();
        let holder = self.holder.clone();
        match &self.backend {
            Backend::Sqlite(path) => {
                self.sqlite_job(path, move |c| {
                    c.execute(
                        "INSERT INTO oauth_tokens (key, version, nonce, sealed)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (key) DO UPDATE SET
                             version = excluded.version, nonce = excluded.nonce,
                             sealed = excluded.sealed,
                             locked_until_ms = CASE WHEN oauth_tokens.locked_by = ?5
                                 THEN NULL ELSE oauth_tokens.locked_until_ms END,
                             locked_by = CASE WHEN oauth_tokens.locked_by = ?5
                                 THEN NULL ELSE oauth_tokens.locked_by END",
                        rusqlite::params![key, version, nonce, sealed, holder],
                    )
                    .map(|_| ())
                })
                .await
            }
            Backend::Postgres(_) => self
                .pg_query(
                    "INSERT INTO botbox_oauth_tokens (key, version, nonce, sealed)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key) DO UPDATE SET
                         version = EXCLUDED.version, nonce = EXCLUDED.nonce,
                         sealed = EXCLUDED.sealed,
                         locked_until_ms = CASE WHEN botbox_oauth_tokens.locked_by = $5
                             THEN NULL ELSE botbox_oauth_tokens.locked_until_ms END,
                         locked_by = CASE WHEN botbox_oauth_tokens.locked_by = $5
                             THEN NULL ELSE botbox_oauth_tokens.locked_by END",
                    &[&key, &version, &nonce, &sealed, &holder],
                )
                .await
                .map(|_| ()),
        }
    }

    /// Releases this host's lock without writing.
    pub async fn unlock(&self, key: &str) -> Result<(), TokenStoreError> {
        let key = key.to_string();
        let holder = self.holder.clone();
        match &self.backend {
            Backend::Sqlite(path) => {
                self.sqlite_job(path, move |c| {
                    c.execute(
                        "UPDATE oauth_tokens SET locked_by = NULL, locked_until_ms = NULL
                         WHERE key = ?1 AND locked_by = ?2",
                        [&key, &holder],
                    )
                    .map(|_| ())
                })
                .await
            }
            Backend::Postgres(_) => self
                .pg_query(
                    "UPDATE botbox_oauth_tokens SET locked_by = NULL, locked_until_ms = NULL
                     WHERE key = $1 AND locked_by = $2",
                    &[&key, &holder],
                )
                .await
                .map(|_| ()),
        }
    }

    /// Runs `f` on a connection of its own, off the async threads. A
    /// refresh is rare, so a connection per call costs nothing that matters.
    async fn sqlite_job<T: Send + 'static>(
        &self,
        path: &std::path::Path,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, TokenStoreError> {
        let path = path.to_path_buf();
        let shown = path.display().to_string();
        let fail = move |reason: String| TokenStoreError::Sqlite {
            path: shown.clone(),
            reason,
        };
        let fail2 = fail.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let c = rusqlite::Connection::open(&path)?;
            c.busy_timeout(Duration::from_secs(5))?;
            c.execute_batch(SQLITE_SCHEMA)?;
            f(&c)
        })
        .await
        .map_err(|e| fail2(e.to_string()))?
        .map_err(|e| fail(e.to_string()))
    }

    async fn pg_query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, TokenStoreError> {
        let Backend::Postgres(url) = &self.backend else {
            return Err(TokenStoreError::Postgres("not a PostgreSQL store".into()));
        };
        let mut slot = self.pg.lock().await;
        if slot.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            *slot = Some(pg_connect(url).await?);
        }
        let Some(client) = slot.as_ref() else {
            return Err(TokenStoreError::Postgres("not connected".into()));
        };
        client
            .query(sql, params)
            .await
            .map_err(|e| TokenStoreError::Postgres(e.to_string()))
    }
}

async fn pg_connect(url: &Secret) -> Result<tokio_postgres::Client, TokenStoreError> {
    let fail = |e: tokio_postgres::Error| TokenStoreError::Postgres(e.to_string());
    // The same sslmode/sslrootcert rules as the outbox's connections.
    let target = super::postgres_target(url, "botbox-tokens").map_err(TokenStoreError::Postgres)?;
    let config = target.config;
    let (mut client, connection) = config.connect(target.tls).await.map_err(fail)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("token store: the PostgreSQL connection ended: {e}");
        }
    });
    // Hosts starting together would race on CREATE IF NOT EXISTS; the
    // advisory lock makes them take turns, as the outbox's schema does.
    let tx = client.transaction().await.map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock(7041998)", &[])
        .await
        .map_err(fail)?;
    tx.batch_execute(PG_SCHEMA).await.map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_lock_is_exclusive_until_released_or_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let a = TokenStore::sqlite(path.clone());
        let b = TokenStore::sqlite(path);
        let lease = Duration::from_secs(60);
        assert!(a.load("k").await.unwrap().is_none());
        let Lock::Taken(row) = a.try_lock("k", lease).await.unwrap() else {
            panic!("a free lock must be taken");
        };
        assert_eq!(row.version, 0);
        assert!(row.sealed.is_none());
        assert!(matches!(b.try_lock("k", lease).await.unwrap(), Lock::Busy));
        // Only the holder releases it.
        b.unlock("k").await.unwrap();
        assert!(matches!(b.try_lock("k", lease).await.unwrap(), Lock::Busy));
        a.save_and_unlock("k", 1, vec![1; 24], vec![2; 40])
            .await
            .unwrap();
        let Lock::Taken(row) = b.try_lock("k", lease).await.unwrap() else {
            panic!("a saved row's lock is free");
        };
        assert_eq!(row.version, 1);
        assert_eq!(row.sealed, Some((vec![1; 24], vec![2; 40])));
        b.unlock("k").await.unwrap();
        assert!(matches!(
            a.try_lock("k", lease).await.unwrap(),
            Lock::Taken(_)
        ));
    }

    #[tokio::test]
    async fn a_lease_passes_when_its_holder_vanishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let a = TokenStore::sqlite(path.clone());
        let b = TokenStore::sqlite(path);
        assert!(matches!(
            a.try_lock("k", Duration::from_millis(1)).await.unwrap(),
            Lock::Taken(_)
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            b.try_lock("k", Duration::from_secs(60)).await.unwrap(),
            Lock::Taken(_)
        ));
    }
}
