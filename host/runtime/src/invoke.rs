//! Calling a connector: one fresh store and instance per invocation, under
//! the plugin's concurrency gate and the invocation limits.

use crate::bindings::{
    ConnectorError, ConnectorInfo, Message, Page, Plugin as PluginBindings, ReadRequest,
    WebhookRequest, WriteOutcome,
};
use crate::error::InvokeError;
use crate::limits::Limits;
use crate::outcome::{classify_trap, finish};
use crate::runtime::Connection;
use crate::state::InvocationState;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use switchyard_broker::interfaces::log::LogCtx;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{Engine, Store, UpdateDeadline};

/// One call into a connector's exports.
#[derive(Debug)]
pub(crate) enum Call {
    Describe,
    Action { action: String, input: Vec<u8> },
    Webhook(WebhookRequest),
    Transform(Vec<Message>),
    Read(ReadRequest),
    Write(Vec<Message>),
}

/// What a [`Call`] returned.
#[derive(Debug)]
pub(crate) enum Output {
    Describe(ConnectorInfo),
    Action(Vec<u8>),
    Messages(Vec<Message>),
    Page(Page),
    Write(Vec<WriteOutcome>),
}

impl Output {
    pub(crate) fn into_action(self) -> Result<Vec<u8>, InvokeError> {
        match self {
            Output::Action(bytes) => Ok(bytes),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn into_messages(self) -> Result<Vec<Message>, InvokeError> {
        match self {
            Output::Messages(messages) => Ok(messages),
            other => Err(unexpected(other)),
        }
    }

    /// Bytes the guest handed back, for `limits.output_bytes`.
    pub(crate) fn size(&self) -> usize {
        fn message(m: &Message) -> usize {
            m.payload.len()
                + m.id.len()
                + m.stream.len()
                + m.key.as_ref().map_or(0, String::len)
                + m.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
        }
        match self {
            Output::Describe(_) => 0,
            Output::Action(bytes) => bytes.len(),
            Output::Messages(ms) => ms.iter().map(message).sum(),
            Output::Page(p) => p.messages.iter().map(message).sum(),
            Output::Write(outcomes) => outcomes.iter().map(|o| o.id.len()).sum(),
        }
    }
}

/// Bounds the invocations of one plugin: `max_concurrent` run, at most
/// `max_concurrent_per_connection` of one connection, up to `max_queued`
/// wait up to `queue_timeout`, the rest are refused as busy.
#[derive(Debug)]
pub(crate) struct Gate {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Calls of the plugin that may run on past an epoch tick at once
    /// (`limits.cpu_bound_per_plugin`): see [`new_store`].
    hot: Arc<Semaphore>,
    /// Its size, resolved once: the core count may change under us.
    hot_slots: usize,
    limits: Limits,
}

impl Gate {
    pub(crate) fn new(limits: &Limits) -> Self {
        Gate {
            permits: Arc::new(Semaphore::new(limits.max_concurrent)),
            waiting: AtomicUsize::new(0),
            hot: Arc::new(Semaphore::new(limits.cpu_bound_calls())),
            hot_slots: limits.cpu_bound_calls(),
            limits: limits.clone(),
        }
    }

    /// Invocations running right now.
    pub(crate) fn running(&self) -> usize {
        self.limits.max_concurrent - self.permits.available_permits()
    }

    /// Hot slots held right now (see [`new_store`]).
    pub(crate) fn cpu_bound_running(&self) -> usize {
        self.hot_slots - self.hot.available_permits()
    }

    /// A slot of the connection's `share` and then of the plugin, waiting
    /// (as one of `max_queued`) up to `queue_timeout` in all; `None` when
    /// busy.
    async fn enter(
        &self,
        share: &Arc<Semaphore>,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        if let Ok(own) = share.clone().try_acquire_owned()
            && let Ok(permit) = self.permits.clone().try_acquire_owned()
        {
            return Some((own, permit));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.limits.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        // Decrements on every exit path, including cancellation.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        let both = async {
            let own = share.clone().acquire_owned().await.ok()?;
            let permit = self.permits.clone().acquire_owned().await.ok()?;
            Some((own, permit))
        };
        tokio::time::timeout(self.limits.queue_timeout(), both)
            .await
            .ok()
            .flatten()
    }
}

/// Runs `call` on a fresh instance of `connection`'s plugin.
pub(crate) async fn invoke(
    engine: &Engine,
    limits: &Limits,
    connection: &Connection,
    invocation_id: u64,
    call: Call,
) -> Result<Output, InvokeError> {
    let plugin = connection.plugin();
    let Some(_permits) = plugin.gate.enter(&connection.share).await else {
        return Err(InvokeError::Busy {
            connection: connection.name().to_owned(),
            running: plugin.gate.running(),
        });
    };
    let mut store = new_store(engine, limits, connection, invocation_id);
    let pre = plugin.pre.clone();
    let run = async {
        let bindings = pre.instantiate_async(&mut store).await?;
        dispatch(&bindings, &mut store, call).await
    };
    // Epoch interruption stops guest code; this outer bound also covers time
    // spent in host functions, which epochs cannot interrupt.
    let grace = crate::engine::EPOCH_TICK * 5;
    let result = match tokio::time::timeout(limits.deadline() + grace, run).await {
        Ok(result) => result,
        Err(_) => {
            store.data_mut().flush_output();
            return Err(InvokeError::Timeout {
                deadline_ms: limits.deadline_ms,
            });
        }
    };
    store.data_mut().flush_output();
    finish(result, &store, limits)
}

pub(crate) fn new_store(
    engine: &Engine,
    limits: &Limits,
    connection: &Connection,
    invocation_id: u64,
) -> Store<InvocationState> {
    let plugin = connection.plugin();
    let log = LogCtx {
        plugin: plugin.name_arc(),
        plugin_version: plugin.version_arc(),
        connection: connection.name_arc(),
        invocation_id,
        redactor: connection.redactor().clone(),
        rate: connection.log_rate().clone(),
    };
    let state = InvocationState::new(log, connection.broker(), limits);
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    // Every epoch tick a running call checks its deadline and yields. From
    // its second tick on it is CPU-bound, and it runs on only while it
    // holds one of its plugin's few hot slots (`cpu_bound_per_plugin`),
    // given up at every tick and taken again in turn: one plugin's
    // spinning calls then hold that many executor threads at most, and
    // wait off the run queue instead of ahead of other plugins' calls.
    let hot = plugin.gate.hot.clone();
    store.epoch_deadline_callback(move |mut ctx| {
        let state = ctx.data_mut();
        let deadline = state.deadline_at;
        if Instant::now() >= deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        state.ticks = state.ticks.saturating_add(1);
        if state.ticks < 2 {
            return Ok(UpdateDeadline::Yield(1));
        }
        let (hot, held) = (hot.clone(), state.hot_slot.clone());
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                drop(held.lock().unwrap().take());
                tokio::task::yield_now().await;
                // Past the deadline it runs on without a slot, for at most
                // one more tick, and is then interrupted.
                let until = tokio::time::Instant::from_std(deadline);
                if let Ok(Ok(permit)) = tokio::time::timeout_at(until, hot.acquire_owned()).await {
                    *held.lock().unwrap() = Some(permit);
                }
            }),
        ))
    });
    arm_deadline(&mut store, limits);
    store
}

/// (Re)starts the deadline for one call.
///
/// The epoch check runs every tick: past the deadline it traps, otherwise it
/// yields to the executor, so a spinning guest neither outlives its budget
/// nor starves other tasks on the same worker thread.
pub(crate) fn arm_deadline(store: &mut Store<InvocationState>, limits: &Limits) {
    store.data_mut().deadline_at = Instant::now() + limits.deadline();
    store.set_epoch_deadline(1);
    if limits.fuel > 0 {
        store
            .set_fuel(limits.fuel)
            .expect("the engine consumes fuel when limits.fuel is set");
    }
}

pub(crate) async fn dispatch(
    bindings: &PluginBindings,
    store: &mut Store<InvocationState>,
    call: Call,
) -> wasmtime::Result<Result<Output, ConnectorError>> {
    let guest = bindings.switchyard_connector_connector();
    Ok(match call {
        Call::Describe => Ok(Output::Describe(guest.call_describe(&mut *store).await?)),
        Call::Action { action, input } => guest
            .call_call_action(&mut *store, &action, &input)
            .await?
            .map(Output::Action),
        Call::Webhook(request) => guest
            .call_handle_webhook(&mut *store, &request)
            .await?
            .map(Output::Messages),
        Call::Transform(messages) => guest
            .call_transform(&mut *store, &messages)
            .await?
            .map(Output::Messages),
        Call::Read(request) => guest
            .call_read(&mut *store, &request)
            .await?
            .map(Output::Page),
        Call::Write(messages) => guest
            .call_write(&mut *store, &messages)
            .await?
            .map(Output::Write),
    })
}

/// A long-lived instance for callers that trade isolation for speed: state
/// left by one call is visible to the next. Each call still has the
/// deadline and limits of an invocation.
pub struct Session {
    store: Store<InvocationState>,
    bindings: PluginBindings,
    limits: Limits,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) async fn start(
        engine: &Engine,
        limits: &Limits,
        connection: &Connection,
        invocation_id: u64,
    ) -> Result<Self, InvokeError> {
        let mut store = new_store(engine, limits, connection, invocation_id);
        let bindings = connection
            .plugin()
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| classify_trap(e, &store, limits))?;
        Ok(Session {
            store,
            bindings,
            limits: limits.clone(),
        })
    }

    /// Transforms a batch on the session's instance.
    pub async fn transform(&mut self, messages: Vec<Message>) -> Result<Vec<Message>, InvokeError> {
        self.run(Call::Transform(messages)).await?.into_messages()
    }

    /// Calls an action on the session's instance.
    pub async fn call_action(
        &mut self,
        action: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, InvokeError> {
        let call = Call::Action {
            action: action.to_owned(),
            input: input.to_vec(),
        };
        self.run(call).await?.into_action()
    }

    async fn run(&mut self, call: Call) -> Result<Output, InvokeError> {
        arm_deadline(&mut self.store, &self.limits);
        let result = dispatch(&self.bindings, &mut self.store, call).await;
        self.store.data_mut().release_hot_slot();
        finish(result, &self.store, &self.limits)
    }
}

pub(crate) fn unexpected(output: Output) -> InvokeError {
    InvokeError::Host(format!("unexpected output kind: {output:?}"))
}
