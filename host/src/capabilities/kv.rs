//! The `kv` import: small persistent state, one namespace per plugin, in
//! one SQLite file (WAL) shared by all plugins.
//!
//! Caps on key size, value size and a namespace's total bytes are checked
//! before anything is written, so a plugin that tries to fill the disk gets
//! `quota-exceeded` and its neighbours are unaffected.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::runtime::HostState;
use crate::wit::botbox::bot::kv::{Host, KvError};

/// Errors opening the store, for the operator.
#[derive(Debug, thiserror::Error)]
pub enum KvOpenError {
    #[error("cannot open kv store `{path}`: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot create folder for kv store `{path}`: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
}

/// Limits of one namespace.
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    pub max_key_bytes: u32,
    pub max_value_bytes: u32,
    pub max_total_bytes: u64,
}

pub struct KvStore {
    conn: Mutex<Connection>,
}

impl KvStore {
    pub fn open(path: &Path) -> Result<KvStore, KvOpenError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| KvOpenError::Folder {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let open_err = |source| KvOpenError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Self::init(conn).map_err(open_err)
    }

    pub fn in_memory() -> Result<KvStore, rusqlite::Error> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<KvStore, rusqlite::Error> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                plugin TEXT NOT NULL,
                key TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (plugin, key)
            ) WITHOUT ROWID;",
        )?;
        Ok(KvStore {
            conn: Mutex::new(conn),
        })
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, KvError> {
        let conn = self.conn.lock().map_err(|_| {
            KvError::Internal("kv store is unavailable after an earlier failure".into())
        })?;
        f(&conn).map_err(|e| KvError::Internal(format!("kv store: {e}")))
    }

    fn check_key(key: &str, limits: &KvLimits) -> Result<(), KvError> {
        if key.len() > limits.max_key_bytes as usize {
            return Err(KvError::KeyTooLong(limits.max_key_bytes));
        }
        Ok(())
    }

    pub fn get(
        &self,
        plugin: &str,
        key: &str,
        limits: &KvLimits,
    ) -> Result<Option<Vec<u8>>, KvError> {
        Self::check_key(key, limits)?;
        self.with_conn(|c| {
            c.query_row(
                "SELECT value FROM kv WHERE plugin = ?1 AND key = ?2",
                params![plugin, key],
                |r| r.get(0),
            )
            .optional()
        })
    }

    pub fn set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        limits: &KvLimits,
    ) -> Result<(), KvError> {
        Self::check_key(key, limits)?;
        if value.len() > limits.max_value_bytes as usize {
            return Err(KvError::ValueTooLarge(limits.max_value_bytes));
        }
        let max_total = limits.max_total_bytes;
        let mut conn = self.conn.lock().map_err(|_| {
            KvError::Internal("kv store is unavailable after an earlier failure".into())
        })?;
        let internal = |e: rusqlite::Error| KvError::Internal(format!("kv store: {e}"));
        // One transaction: the quota check and the write see the same state,
        // even when several instances of the plugin write at once.
        let tx = conn.transaction().map_err(internal)?;
        let (total, existing): (i64, i64) = tx
            .query_row(
                "SELECT
                    COALESCE(SUM(length(key) + length(value)), 0),
                    COALESCE(SUM(CASE WHEN key = ?2 THEN length(key) + length(value) ELSE 0 END), 0)
                 FROM kv WHERE plugin = ?1",
                params![plugin, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(internal)?;
        let after = (total - existing) as u64 + key.len() as u64 + value.len() as u64;
        if after > max_total {
            return Err(KvError::QuotaExceeded(max_total));
        }
        tx.execute(
            "INSERT INTO kv (plugin, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
            params![plugin, key, value],
        )
        .map_err(internal)?;
        tx.commit().map_err(internal)
    }

    pub fn delete(&self, plugin: &str, key: &str, limits: &KvLimits) -> Result<(), KvError> {
        Self::check_key(key, limits)?;
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM kv WHERE plugin = ?1 AND key = ?2",
                params![plugin, key],
            )
            .map(|_| ())
        })
    }

    pub fn list_keys(
        &self,
        plugin: &str,
        prefix: &str,
        limit: u32,
        limits: &KvLimits,
    ) -> Result<Vec<String>, KvError> {
        Self::check_key(prefix, limits)?;
        let limit = limit.min(10_000);
        self.with_conn(|c| {
            // substr comparison instead of LIKE: a prefix may contain % or _.
            let mut stmt = c.prepare_cached(
                "SELECT key FROM kv WHERE plugin = ?1 AND substr(key, 1, length(?2)) = ?2
                 ORDER BY key LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![plugin, prefix, limit], |r| r.get(0))?;
            rows.collect()
        })
    }
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        let p = &self.plugin;
        Ok(p.kv.get(&p.name, &key, &p.kv_limits))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), KvError>> {
        let p = &self.plugin;
        Ok(p.kv.set(&p.name, &key, &value, &p.kv_limits))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), KvError>> {
        let p = &self.plugin;
        Ok(p.kv.delete(&p.name, &key, &p.kv_limits))
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, KvError>> {
        let p = &self.plugin;
        Ok(p.kv.list_keys(&p.name, &prefix, limit, &p.kv_limits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: KvLimits = KvLimits {
        max_key_bytes: 8,
        max_value_bytes: 16,
        max_total_bytes: 40,
    };

    #[test]
    fn namespaces_are_separate() {
        let kv = KvStore::in_memory().unwrap();
        kv.set("a", "k", b"1", &LIMITS).unwrap();
        assert_eq!(kv.get("a", "k", &LIMITS).unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get("b", "k", &LIMITS).unwrap(), None);
    }

    #[test]
    fn caps_are_enforced_before_writing() {
        let kv = KvStore::in_memory().unwrap();
        assert_eq!(
            kv.set("a", "123456789", b"", &LIMITS),
            Err(KvError::KeyTooLong(8))
        );
        assert_eq!(
            kv.set("a", "k", &[0; 17], &LIMITS),
            Err(KvError::ValueTooLarge(16))
        );
        kv.set("a", "k1", &[0; 16], &LIMITS).unwrap(); // 18 bytes
        kv.set("a", "k2", &[0; 16], &LIMITS).unwrap(); // 36 bytes
        assert_eq!(
            kv.set("a", "k3", &[0; 16], &LIMITS),
            Err(KvError::QuotaExceeded(40))
        );
        // Replacing a value counts the new size, not both.
        kv.set("a", "k2", &[1; 16], &LIMITS).unwrap();
        assert_eq!(kv.get("a", "k3", &LIMITS).unwrap(), None);
        // Another plugin has its own quota.
        kv.set("b", "k3", &[0; 16], &LIMITS).unwrap();
    }

    #[test]
    fn prefix_listing_treats_wildcards_literally() {
        let kv = KvStore::in_memory().unwrap();
        for k in ["a%1", "ab", "a%2", "b"] {
            kv.set("p", k, b"", &LIMITS).unwrap();
        }
        assert_eq!(
            kv.list_keys("p", "a%", 10, &LIMITS).unwrap(),
            vec!["a%1", "a%2"]
        );
        assert_eq!(
            kv.list_keys("p", "", 2, &LIMITS).unwrap(),
            vec!["a%1", "a%2"]
        );
    }
}
