//! The shared wasmtime [`Engine`]: async, epoch-interrupted, pooled.

use crate::limits::Limits;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are accurate to about this much.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Component instances the pool holds at once, across all plugins.
/// Default: 1000.
pub const POOL_INSTANCES: u32 = 1_000;

/// An [`Engine`] plus the thread that advances its epoch. Dropping the last
/// clone stops the thread.
#[derive(Clone, Debug)]
pub struct SharedEngine {
    engine: Engine,
    _ticker: Arc<EpochTicker>,
}

impl SharedEngine {
    /// Builds an engine whose pool and stack limits follow `limits`.
    pub fn new(limits: &Limits) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(limits.memory_bytes)
            .max_memories_per_component(limits.memories as u32)
            .max_tables_per_component(limits.tables as u32)
            .max_core_instances_per_component(limits.instances as u32)
            .table_elements(limits.table_elements)
            // Keep a few slots warm so a fresh instance reuses mapped pages.
            .max_unused_warm_slots(64);

        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .max_wasm_stack(limits.wasm_stack_bytes)
            // The async fiber stack must hold the wasm stack plus host frames.
            .async_stack_size(limits.wasm_stack_bytes + (1 << 20))
            // Pooled slots reserve address space, not memory: 4 GiB each
            // lets Cranelift drop bounds checks; the limit is max_memory_size.
            .memory_reservation(4 << 30)
            .memory_guard_size(32 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(SharedEngine {
            engine,
            _ticker: Arc::new(ticker),
        })
    }

    /// The engine itself.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

#[derive(Debug)]
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
