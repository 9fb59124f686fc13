//! The shared wasmtime [`Engine`]: async, epoch-interrupted, pooled.

use crate::limits::Limits;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

/// How often the epoch advances; deadlines are accurate to about this much,
/// and a running guest yields to the executor this often. 1 ms (it was
/// 10 ms): with 32 calls of one plugin spinning, another plugin's call
/// otherwise waited up to a whole tick behind the one allowed to run (p99
/// 8 ms against 0.5 ms alone). The ticker thread's thousand wake-ups a
/// second cost well under 1% of a core.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Bytes of each pooled memory kept resident between instances. Default:
/// 4 MiB (Rust guests put a 1 MiB shadow stack and their data below that).
pub const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// An [`Engine`] plus the thread that advances its epoch. Dropping the last
/// clone stops the thread.
#[derive(Clone, Debug)]
pub struct SharedEngine {
    engine: Engine,
    _ticker: Option<Arc<EpochTicker>>,
}

impl SharedEngine {
    /// Builds an engine whose pool and stack limits follow `limits`.
    pub fn new(limits: &Limits) -> wasmtime::Result<Self> {
        Self::with_epochs(limits, true)
    }

    /// As [`SharedEngine::new`]; `epochs: false` compiles guests without
    /// epoch checks and starts no ticker, so **deadlines no longer stop
    /// guest code**. Only the benchmark suite uses it, to measure what the
    /// checks cost.
    #[doc(hidden)]
    pub fn with_epochs(limits: &Limits, epochs: bool) -> wasmtime::Result<Self> {
        let instances = limits.pool_instances;
        let mut pool = PoolingAllocationConfig::new();
        // Most components have one memory (two with a WASI adapter) and a
        // handful of core instances and tables.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(4))
            .total_memories(instances)
            .total_tables(instances.saturating_mul(2))
            .total_stacks(instances)
            .max_memory_size(limits.memory_bytes)
            .max_memories_per_component(limits.memories as u32)
            .max_tables_per_component(limits.tables as u32)
            .max_core_instances_per_component(limits.instances as u32)
            .table_elements(limits.table_elements)
            // Keep slots warm and their touched pages resident: resetting a
            // slot then memsets only the pages the last instance dirtied
            // (found with PAGEMAP_SCAN on Linux >= 6.7) instead of dropping
            // them with madvise, so the next instance takes no page faults.
            .max_unused_warm_slots(64)
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES / 16);

        let mut config = Config::new();
        config
            .epoch_interruption(epochs)
            .consume_fuel(limits.fuel > 0)
            .wasm_component_model(true)
            .max_wasm_stack(limits.wasm_stack_bytes)
            // The async fiber stack must hold the wasm stack plus host frames.
            .async_stack_size(limits.wasm_stack_bytes + (1 << 20))
            // Pooled slots reserve address space, not memory: 4 GiB each
            // lets Cranelift drop bounds checks; the limit is max_memory_size.
            .memory_reservation(4 << 30)
            .memory_guard_size(32 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os("SWITCHYARD_PERF_MAP").is_some_and(|v| v == "1") {
            // Writes /tmp/perf-<pid>.map so `perf report` names guest
            // functions (see BENCHMARKS.md).
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let ticker = epochs.then(|| Arc::new(EpochTicker::start(engine.clone())));
        Ok(SharedEngine {
            engine,
            _ticker: ticker,
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
