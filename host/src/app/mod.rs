//! Wiring a config into a running host: providers, channels, kv, the
//! delivery engine and the runtime, in the order the data flows ([`App`]).
//! [`supervisor`] runs it: delivery workers, triggers, listeners and reload.

pub mod ad_hoc;
pub mod bot_test;
pub mod demo;
pub mod supervisor;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::capabilities::kv::KvStore;
use crate::config::{Config, ConfigError, ConfigIssue};
use crate::delivery::store::Stores;
use crate::delivery::throttle::SharedClock;
use crate::delivery::{Delivery, DeliveryObservers};
use crate::providers::Registry;
use crate::runtime::compile::IncrementalCache;
use crate::runtime::{LoadError, Plugin, PoolSizes, Runtime, RuntimeOptions, Services, WallClock};
use crate::triggers::Shared;
use crate::triggers::admin::AdminSettings;
use crate::triggers::webhooks::WebhookSettings;

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is unreadable or invalid (every problem, with its key).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kv store or the outbox would not open.
    #[error("cannot open storage: {0}")]
    Storage(String),
    /// Wasmtime would not start with these settings.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

/// Why a config reload was refused; the old config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Plugins of the new config that would not load, or would not fit the pool.
    #[error("{} plugin(s) would not load:\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Plugins(Vec<LoadError>),
}

/// A host built from one config.
pub struct App {
    /// The config this host was built from.
    pub config: Config,
    /// The engine, the loaded plugins and the services they call.
    pub runtime: Arc<Runtime>,
    /// This config's providers and channels over the shared outbox.
    pub delivery: Arc<Delivery>,
    /// `[webhooks]` and the providers' `inbound` sections, when set.
    pub webhooks: Option<WebhookSettings>,
    /// `[admin]`, when set.
    pub admin: Option<AdminSettings>,
    /// The replay cache and metrics, shared by every generation.
    pub shared: Arc<Shared>,
}

/// Validates the listener sections together, so every problem is reported.
fn listeners(
    config: &Config,
) -> Result<(Option<WebhookSettings>, Option<AdminSettings>), Vec<ConfigIssue>> {
    match (
        WebhookSettings::from_config(config),
        AdminSettings::from_config(config),
    ) {
        (Ok(w), Ok(a)) => Ok((w, a)),
        (w, a) => Err(w
            .err()
            .unwrap_or_default()
            .into_iter()
            .chain(a.err().unwrap_or_default())
            .collect()),
    }
}

/// The configured outbox, and the clock its throttles count in.
pub fn open_outbox(config: &Config) -> Result<(Stores, SharedClock), StartError> {
    let opened = crate::delivery::store::open(
        &config.storage,
        config.runtime.time_scale,
        config.runtime.time_origin_ms,
    )
    .map_err(|e| StartError::Storage(e.to_string()))?;
    Ok((opened.stores, opened.clock))
}

/// What a host is built with besides its config.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The wall clock plugins and cron schedules read: the system's, or a
    /// fixed one (`botbox test`).
    pub wall_clock: WallClock,
    /// Where compiled components are cached; `storage.dir/cache` when
    /// `None`.
    pub cache_dir: Option<PathBuf>,
    /// `botbox dev`'s incremental compile cache, kept across the hosts it
    /// builds; `None` (`botbox run`) compiles each component whole.
    pub incremental: Option<Arc<IncrementalCache>>,
}

impl App {
    /// Builds everything but the plugins. Provider and channel problems are
    /// reported together, like the rest of the config.
    pub fn build(config: Config) -> Result<App, StartError> {
        App::build_with(config, BuildOptions::default())
    }

    /// [`App::build`] with a chosen wall clock and compile cache.
    pub fn build_with(config: Config, options: BuildOptions) -> Result<App, StartError> {
        let registry = Registry::from_config(&config).map_err(|issues| invalid(&config, issues))?;
        let (webhooks, admin) = listeners(&config).map_err(|issues| invalid(&config, issues))?;
        let (outbox, clock) = open_outbox(&config)?;
        let delivery = Delivery::new(
            &config,
            &registry,
            outbox,
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
        let runtime = Runtime::new_with(
            RuntimeOptions {
                pool: PoolSizes::for_instances(config.runtime.pool_instances),
                cache_dir: Some(
                    options
                        .cache_dir
                        .unwrap_or_else(|| config.storage.dir.join("cache")),
                ),
                wall_clock: options.wall_clock,
            },
            services,
            options.incremental,
        )
        .map_err(|e| StartError::Engine(format!("{e:#}")))?;
        Ok(App {
            config,
            runtime: Arc::new(runtime),
            delivery,
            webhooks,
            admin,
            shared: Arc::new(Shared::default()),
        })
    }

    /// Loads every plugin; returns the ones that failed.
    pub async fn load_plugins(&self) -> Vec<LoadError> {
        self.runtime.load_all(&self.config).await
    }

    /// Builds the next generation from a new config without touching the
    /// running one: providers, channels, the delivery engine and every
    /// plugin. It shares the runtime, kv, outbox, clock and observers.
    /// Any error refuses the whole config.
    pub async fn rebuild(
        &self,
        config: Config,
    ) -> Result<(App, BTreeMap<String, Arc<Plugin>>), ReloadError> {
        let registry = Registry::from_config(&config).map_err(|issues| ConfigError::Invalid {
            path: config.source.display().to_string(),
            issues,
        })?;
        let (webhooks, admin) = listeners(&config).map_err(|issues| ConfigError::Invalid {
            path: config.source.display().to_string(),
            issues,
        })?;
        let delivery = Delivery::new(
            &config,
            &registry,
            self.delivery.stores(),
            self.delivery.clock().clone(),
            self.delivery.observers().clone(),
        )
        .map_err(|issues| ConfigError::Invalid {
            path: config.source.display().to_string(),
            issues,
        })?;
        let delivery = Arc::new(delivery);
        let current = self.runtime.services();
        let services = Services {
            kv: current.kv,
            delivery: delivery.clone(),
            log_observers: current.log_observers,
        };
        let mut prepared = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, plugin_config) in &config.plugins {
            match self.runtime.prepare(name, plugin_config, &services).await {
                Ok(p) => {
                    prepared.insert(name.clone(), Arc::new(p));
                }
                Err(e) => errors.push(e),
            }
        }
        if let Err(e) = self.runtime.check_pool(prepared.values().map(|p| &**p)) {
            errors.push(e);
        }
        if !errors.is_empty() {
            return Err(ReloadError::Plugins(errors));
        }
        Ok((
            App {
                config,
                runtime: self.runtime.clone(),
                delivery,
                webhooks,
                admin,
                shared: self.shared.clone(),
            },
            prepared,
        ))
    }

    /// Puts a rebuilt generation in service, all plugins at once. The
    /// previous generation's delivery workers must have stopped.
    pub fn activate(&self, plugins: BTreeMap<String, Arc<Plugin>>) {
        let current = self.runtime.services();
        self.runtime.set_services(Services {
            kv: current.kv,
            delivery: self.delivery.clone(),
            log_observers: current.log_observers,
        });
        self.delivery.reload_history();
        self.runtime.replace_all(plugins);
    }
}

fn invalid(config: &Config, issues: Vec<ConfigIssue>) -> StartError {
    StartError::Config(ConfigError::Invalid {
        path: config.source.display().to_string(),
        issues,
    })
}
