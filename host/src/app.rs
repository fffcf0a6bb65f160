//! Wiring a config into a running host: providers, channels, kv, the
//! delivery engine and the runtime, in the order the data flows.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::capabilities::kv::KvStore;
use crate::config::{Config, ConfigError, ConfigIssue};
use crate::delivery::outbox::SqliteOutbox;
use crate::delivery::throttle::{ScaledClock, SharedClock, SystemClock};
use crate::delivery::{Delivery, DeliveryObservers};
use crate::providers::Registry;
use crate::runtime::{LoadError, PoolSizes, Runtime, RuntimeOptions, Services};

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open storage: {0}")]
    Storage(String),
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

/// A host built from one config.
pub struct App {
    pub config: Config,
    pub runtime: Arc<Runtime>,
    pub delivery: Arc<Delivery>,
}

impl App {
    /// Builds everything but the plugins. Provider and channel problems are
    /// reported together, like the rest of the config.
    pub fn build(config: Config) -> Result<App, StartError> {
        let registry = Registry::from_config(&config).map_err(|issues| invalid(&config, issues))?;
        let outbox = SqliteOutbox::open(&config.storage.dir.join("outbox.sqlite"))
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let clock: SharedClock = if config.runtime.time_scale == 1.0 {
            Arc::new(SystemClock)
        } else {
            Arc::new(ScaledClock::new(config.runtime.time_scale))
        };
        let delivery = Delivery::new(
            &config,
            &registry,
            Arc::new(outbox),
            clock,
            DeliveryObservers::default(),
        )
        .map_err(|issues| invalid(&config, issues))?;
        let delivery = Arc::new(delivery);
        let kv = KvStore::open(&config.storage.dir.join("kv.sqlite"))
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let services = Services {
            kv: Arc::new(kv),
            delivery: delivery.clone(),
            log_observers: broadcast::channel(4096).0,
        };
        let runtime = Runtime::new(
            RuntimeOptions {
                pool: PoolSizes::default(),
                cache_dir: Some(config.storage.dir.join("cache")),
            },
            services,
        )
        .map_err(|e| StartError::Engine(format!("{e:#}")))?;
        Ok(App {
            config,
            runtime: Arc::new(runtime),
            delivery,
        })
    }

    /// Loads every plugin; returns the ones that failed.
    pub async fn load_plugins(&self) -> Vec<LoadError> {
        self.runtime.load_all(&self.config).await
    }
}

fn invalid(config: &Config, issues: Vec<ConfigIssue>) -> StartError {
    StartError::Config(ConfigError::Invalid {
        path: config.source.display().to_string(),
        issues,
    })
}
