//! `switchyard:connector/config`: non-secret settings of a connection.

use crate::bindings::switchyard::connector::config;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// The settings of one connection, shared by all its invocations.
///
/// Default: empty, so every `get` returns `none`.
#[derive(Debug, Clone, Default)]
pub struct ConfigCtx {
    values: Arc<BTreeMap<String, String>>,
}

impl ConfigCtx {
    /// Wraps a connection's settings.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        ConfigCtx {
            values: Arc::new(values),
        }
    }
}

/// Borrowed view handed to the generated `Host` impl.
#[derive(Debug)]
pub struct ConfigCtxView<'a> {
    pub ctx: &'a ConfigCtx,
}

/// Implemented by store data that offers `config`.
pub trait ConfigView: Send {
    fn config(&mut self) -> ConfigCtxView<'_>;
}

impl config::Host for ConfigCtxView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.values.get(&key).cloned())
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .ctx
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigCtxView<'a>;
}

/// Adds `switchyard:connector/config` to `linker`.
pub fn add_to_linker<T: ConfigView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    config::add_to_linker::<T, HasConfig>(linker, T::config)
}
