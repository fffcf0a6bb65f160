//! The `settings` import: the plugin's own, non-secret settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::Linker;

use super::{Capability, Ctx, HasCapability, Setup, View};
use crate::wit::botbox::bot::settings::{self, Host};
use crate::wit::v0_2::botbox::bot::settings as v0_2;

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
        settings::add_to_linker::<T, HasCapability<Self>>(linker, <T as View<Self>>::view)?;
        v0_2::add_to_linker::<T, HasCapability<Self>>(linker, <T as View<Self>>::view)
    }
}

/// `botbox:bot/settings@0.2.0`: unchanged from 0.1.0.
impl v0_2::Host for Ctx<'_, SettingsSlice> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Host::get(self, key).await
    }

    async fn list(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Host::list(self).await
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
