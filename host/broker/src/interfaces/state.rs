//! `switchyard:connector/state`: the connection's key-value store.
//!
//! Keys live in the namespace of the host-assigned connection identity; a
//! guest names keys, never namespaces. Calls go to the host's
//! [`StateBackend`](crate::kv::StateBackend): short SQLite transactions on
//! the embedded database (WAL) by default, JetStream KV on a cluster.

use crate::bindings::switchyard::connector::state::{self, StateError};
use crate::kv::{ConnectionState, StateError as StoreError};
use crate::observe::{BrokerUse, ObserveCtx};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// The state of one connection. Default: not granted.
#[derive(Debug, Clone, Default)]
pub struct StateCtx {
    pub(crate) connection: Arc<str>,
    /// `None` when the connection is not granted state.
    pub(crate) namespace: Option<ConnectionState>,
    /// Where writes are reported.
    pub(crate) observe: ObserveCtx,
}

/// Borrowed view handed to the generated `Host` impl.
#[derive(Debug)]
pub struct StateCtxView<'a> {
    pub ctx: &'a StateCtx,
}

/// Implemented by store data that offers `state`.
pub trait StateView: Send {
    fn state(&mut self) -> StateCtxView<'_>;
}

impl StateCtxView<'_> {
    async fn run<'a, T, F>(
        &'a self,
        op: impl FnOnce(&'a ConnectionState) -> F,
    ) -> wasmtime::Result<Result<T, StateError>>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let Some(ns) = &self.ctx.namespace else {
            return Ok(Err(StateError::NotGranted(format!(
                "connection `{}` has no state; set `state = true` under [connections.{}.grants]",
                self.ctx.connection, self.ctx.connection
            ))));
        };
        Ok(op(ns).await.map_err(|e| match e {
            StoreError::Database(_) | StoreError::Unavailable(_) => {
                StateError::Unavailable(e.to_string())
            }
            other => StateError::TooLarge(other.to_string()),
        }))
    }

    /// Reports a write that reached the store (refusals never did).
    fn written<T>(
        &self,
        key: &str,
        op: &'static str,
        result: wasmtime::Result<Result<T, StateError>>,
        applied: impl FnOnce(&T) -> bool,
    ) -> wasmtime::Result<Result<T, StateError>> {
        if let Ok(Ok(value)) = &result {
            self.ctx.observe.broker(BrokerUse::StateWrite {
                key,
                op,
                applied: applied(value),
            });
        }
        result
    }
}

impl state::Host for StateCtxView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, StateError>> {
        self.run(|ns| ns.get(&key)).await
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), StateError>> {
        let result = self.run(|ns| ns.set(&key, &value)).await;
        self.written(&key, "set", result, |_| true)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, StateError>> {
        let result = self.run(|ns| ns.delete(&key)).await;
        self.written(&key, "delete", result, |existed| *existed)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<bool, StateError>> {
        let result = self
            .run(|ns| ns.compare_and_swap(&key, expected.as_deref(), new.as_deref()))
            .await;
        self.written(&key, "compare-and-swap", result, |swapped| *swapped)
    }

    async fn keys(
        &mut self,
        prefix: String,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, StateError>> {
        self.run(|ns| ns.keys(&prefix, limit as usize)).await
    }
}

struct HasState;

impl HasData for HasState {
    type Data<'a> = StateCtxView<'a>;
}

/// Adds `switchyard:connector/state` to `linker`.
pub fn add_to_linker<T: StateView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    state::add_to_linker::<T, HasState>(linker, T::state)
}
