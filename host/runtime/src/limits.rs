//! Per-invocation and per-plugin resource limits.

use serde::Deserialize;
use std::time::Duration;

/// Limits applied to every invocation of a plugin.
///
/// Every field has a default suited to request/response connectors; operators
/// override them under `[limits]` in `switchyard.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock budget for one invocation, instantiation included.
    /// Default: 5000 ms. Enforced by epoch interruption (1 ms ticks).
    pub deadline_ms: u64,
    /// Largest linear memory a guest may grow to. Default: 64 MiB.
    pub memory_bytes: usize,
    /// Largest wasm stack a guest may use. Default: 512 KiB.
    pub wasm_stack_bytes: usize,
    /// Most elements in one table. Default: 20 000.
    pub table_elements: usize,
    /// Most core instances one component may create. Default: 50.
    pub instances: usize,
    /// Most tables one component may create. Default: 20.
    pub tables: usize,
    /// Most linear memories one component may create. Default: 4.
    pub memories: usize,
    /// Largest result a guest may return (sum of payload bytes). Default: 4 MiB.
    pub output_bytes: usize,
    /// Invocations of one plugin running at once. Default: 32.
    pub max_concurrent: usize,
    /// Of those, the most one connection may hold, so a busy connection
    /// leaves slots to the other connections of its plugin (its further
    /// calls wait for one of its own, like any queued call). Default: 24
    /// (three quarters of the default `max_concurrent`); never more than
    /// `max_concurrent`.
    pub max_concurrent_per_connection: usize,
    /// Invocations waiting for a slot before new ones are refused as busy.
    /// Default: 256.
    pub max_queued: usize,
    /// How long a queued invocation waits for a slot before failing busy.
    /// Default: 2000 ms.
    pub queue_timeout_ms: u64,
    /// Bytes of guest stdout plus stderr kept per invocation and copied to
    /// the log. Default: 64 KiB.
    pub stdio_bytes: usize,
    /// Instances alive at once across all plugins: the size of the pooling
    /// allocator, which reserves (not commits) about 4 GiB of address space
    /// per instance. Default: 1000.
    pub pool_instances: u32,
    /// How long connecting to an upstream may take. Default: 5000 ms.
    pub http_connect_timeout_ms: u64,
    /// How long an upstream may take to start answering (status and
    /// headers). Default: 10 000 ms.
    pub http_first_byte_timeout_ms: u64,
    /// Budget for one outbound request from connect to the last body byte,
    /// retries included. Default: 30 000 ms; the invocation deadline still
    /// bounds the invocation.
    pub http_total_timeout_ms: u64,
    /// Largest request body a guest may send. Default: 4 MiB.
    pub http_request_bytes: usize,
    /// Largest response body the host reads for a guest. Default: 8 MiB.
    pub http_response_bytes: usize,
    /// Outbound requests one invocation may start. Default: 32.
    pub http_requests_per_invocation: u32,
    /// Request and response body bytes one invocation may move over
    /// HTTP, all its requests together; once spent, further requests are
    /// refused (`HTTP-request-denied`, logged and audited). Default: 64 MiB;
    /// 0 = unbounded.
    pub http_bytes_per_invocation: u64,
    /// Requests per second (and burst) one plugin may send to one
    /// destination, across all its connections; an upstream's
    /// `Retry-After` pauses the same bucket. Default: 100.
    pub http_destination_per_second: u32,
    /// Of those, the requests per second one connection may send to one
    /// destination, so a busy connection leaves pace to its siblings.
    /// Default: 75; at or above `http_destination_per_second` (or 0) it
    /// has no effect.
    pub http_destination_per_second_per_connection: u32,
    /// How long an outbound request or `rate-limit.acquire` waits for a
    /// permit before the guest is told it is rate limited. Default: 1000 ms.
    pub rate_limit_wait_ms: u64,
    /// CPU budget of one invocation in wasmtime fuel (about one unit per
    /// wasm instruction), beside the wall-clock deadline: time a guest
    /// spends waiting (on HTTP, for a slot) costs none, so this bounds the
    /// compute one call may burn however the host is loaded. Default:
    /// 50 000 000 000: a tight loop spends 10 000 000 000 in under 2 s on
    /// the 2-core test machine, so the default sits above the default
    /// deadline and an idle host still stops a spinner by its deadline;
    /// 0 turns fuel off, which saves its small per-instruction cost.
    pub fuel: u64,
    /// Keys one connection may keep in `state`. Default: 100 000.
    pub state_keys_per_connection: u64,
    /// Bytes (keys plus values) one connection may keep in `state`.
    /// Default: 256 MiB.
    pub state_bytes_per_connection: u64,
    /// Largest component file the host reads, checked on the file's
    /// length before it is read; uploads are bounded by it too.
    /// Default: 64 MiB (Python and JavaScript connectors are 15–40 MB).
    pub component_bytes: u64,
    /// Most functions a component's core modules may hold together before
    /// it is refused uncompiled (see [`crate::admission`]). Default: 100 000.
    pub compile_functions: usize,
    /// Largest function body a component may hold, in bytes. Default:
    /// 1 MiB.
    pub compile_function_bytes: usize,
    /// Σ over a component's functions of (blocks, loops and ifs in the
    /// function)²: Cranelift's compile time grows with that square (see
    /// [`crate::admission`] for the measurements). Default: 10¹⁰, about
    /// 20 s of compile at most on a 2-core machine.
    pub compile_block_cost: u64,
    /// Deepest nesting of blocks, loops and ifs in one function. Default:
    /// 10 000.
    pub compile_nesting_depth: usize,
    /// Compiles running at once; further loads wait their turn. Default: 1.
    pub compiles_in_flight: usize,
    /// Resource handles (HTTP requests, bodies, streams, header maps, …)
    /// one invocation may hold at once: each costs host memory, so a guest
    /// that leaks them ends as a resource limit instead. Default: 10 000
    /// (wasmtime's own cap is 1 000 000).
    pub resource_handles: usize,
    /// Calls of one plugin that may run on past one epoch tick (1 ms) of
    /// guest code at once; the others wait their turn at each tick, off
    /// the executor's run queue. Bounds how much of the host's CPU one
    /// plugin's spinning calls take from the others. Default: 0, meaning
    /// half the cores (at least 1).
    pub cpu_bound_per_plugin: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_ms: 5_000,
            memory_bytes: 64 << 20,
            wasm_stack_bytes: 512 << 10,
            table_elements: 20_000,
            instances: 50,
            tables: 20,
            memories: 4,
            output_bytes: 4 << 20,
            max_concurrent: 32,
            max_concurrent_per_connection: 24,
            max_queued: 256,
            queue_timeout_ms: 2_000,
            stdio_bytes: 64 << 10,
            pool_instances: 1_000,
            http_connect_timeout_ms: 5_000,
            http_first_byte_timeout_ms: 10_000,
            http_total_timeout_ms: 30_000,
            http_request_bytes: 4 << 20,
            http_response_bytes: 8 << 20,
            http_requests_per_invocation: 32,
            http_bytes_per_invocation: 64 << 20,
            http_destination_per_second: 100,
            http_destination_per_second_per_connection: 75,
            rate_limit_wait_ms: 1_000,
            fuel: 50_000_000_000,
            state_keys_per_connection: 100_000,
            state_bytes_per_connection: 256 << 20,
            component_bytes: 64 << 20,
            compile_functions: 100_000,
            compile_function_bytes: 1 << 20,
            compile_block_cost: 10_000_000_000,
            compile_nesting_depth: 10_000,
            compiles_in_flight: 1,
            resource_handles: 10_000,
            cpu_bound_per_plugin: 0,
        }
    }
}

impl Limits {
    /// The per-connection state quota these limits set.
    pub fn state_quota(&self) -> switchyard_broker::kv::StateQuota {
        switchyard_broker::kv::StateQuota {
            max_keys: self.state_keys_per_connection,
            max_bytes: self.state_bytes_per_connection,
        }
    }

    /// The invocation deadline as a [`Duration`].
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Slots one connection may hold: `max_concurrent_per_connection`,
    /// at most `max_concurrent`.
    pub fn connection_share(&self) -> usize {
        self.max_concurrent_per_connection.min(self.max_concurrent)
    }

    /// `cpu_bound_per_plugin`, with 0 resolved to half the cores (at
    /// least 1).
    pub fn cpu_bound_calls(&self) -> usize {
        match self.cpu_bound_per_plugin {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        }
    }

    /// The queue wait bound as a [`Duration`].
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }

    /// Checks the limits are usable, naming the offending key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("deadline_ms", self.deadline_ms as usize),
            ("memory_bytes", self.memory_bytes),
            ("wasm_stack_bytes", self.wasm_stack_bytes),
            ("instances", self.instances),
            ("memories", self.memories),
            ("output_bytes", self.output_bytes),
            ("max_concurrent", self.max_concurrent),
            (
                "max_concurrent_per_connection",
                self.max_concurrent_per_connection,
            ),
            ("pool_instances", self.pool_instances as usize),
            (
                "http_connect_timeout_ms",
                self.http_connect_timeout_ms as usize,
            ),
            (
                "http_first_byte_timeout_ms",
                self.http_first_byte_timeout_ms as usize,
            ),
            ("http_total_timeout_ms", self.http_total_timeout_ms as usize),
            (
                "http_destination_per_second",
                self.http_destination_per_second as usize,
            ),
            ("component_bytes", self.component_bytes as usize),
            ("compile_functions", self.compile_functions),
            ("compile_function_bytes", self.compile_function_bytes),
            ("compile_block_cost", self.compile_block_cost as usize),
            ("compile_nesting_depth", self.compile_nesting_depth),
            ("compiles_in_flight", self.compiles_in_flight),
            ("resource_handles", self.resource_handles),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(format!("limits.{key} must be greater than zero"));
            }
        }
        if self.wasm_stack_bytes > 64 << 20 {
            return Err("limits.wasm_stack_bytes must be at most 64 MiB".into());
        }
        if self.memory_bytes > 4 << 30 {
            return Err("limits.memory_bytes must be at most 4 GiB (wasm32)".into());
        }
        Ok(())
    }
}

impl From<&Limits> for switchyard_broker::egress::EgressLimits {
    fn from(l: &Limits) -> Self {
        use std::time::Duration;
        switchyard_broker::egress::EgressLimits {
            connect: Duration::from_millis(l.http_connect_timeout_ms),
            first_byte: Duration::from_millis(l.http_first_byte_timeout_ms),
            total: Duration::from_millis(l.http_total_timeout_ms),
            request_bytes: l.http_request_bytes,
            response_bytes: l.http_response_bytes,
            rate_wait: Duration::from_millis(l.rate_limit_wait_ms),
            destination_per_second: l.http_destination_per_second,
            invocation_bytes: l.http_bytes_per_invocation,
            connection_destination_per_second: l.http_destination_per_second_per_connection,
        }
    }
}
