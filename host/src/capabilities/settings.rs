//! The `settings` import: the plugin's own, non-secret settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::Linker;

use super::{Capability, Ctx, HasCapability, Setup, View};
use crate::wit::botbox::bot::settings::{self, Host};

/// The `settings` capability.
pub struct Settings;

/// What every store of one plugin shares for `settings`: its
/// `plugins.<name>.settings`, sorted by key.
pub type SettingsSlice = Arc<BTreeMap<String, String>>;

impl Capability for Settings {
    type Slice = SettingsSlice;

    fn slice(setup: &Setup<'_>, _previous: Option<&SettingsSlice>) -> SettingsSlice {
        Arc::new(setup.config.settings.clone())
    }

    fn add_to_linker<T: View<Self>>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        settings::add_to_linker::<T, HasCapability<Self>>(linker, <T as View<Self>>::view)
    }
}

impl Host for Ctx<'_, SettingsSlice> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.slice.get(&key).cloned())
    }

    async fn list(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        // BTreeMap iteration is already sorted by key, as the WIT promises.
        Ok(self
            .slice
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
