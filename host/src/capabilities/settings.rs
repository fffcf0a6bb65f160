//! The `settings` import: the plugin's own, non-secret settings.

use crate::runtime::HostState;
use crate::wit::botbox::bot::settings::Host;

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.plugin.settings.get(&key).cloned())
    }

    async fn list(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        // BTreeMap iteration is already sorted by key, as the WIT promises.
        Ok(self
            .plugin
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
