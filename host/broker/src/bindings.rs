//! Host bindings of the interfaces the broker serves, generated from
//! `wit/` for `switchyard:connector@0.1.1`: `types`, `log`, `config`,
//! `secrets`, `state` and `rate-limit`. `wasi:http` comes from
//! wasmtime-wasi-http. The sandbox's bindings of the `plugin` world reuse
//! these (bindgen's `with`), so both speak the same Rust types.

wasmtime::component::bindgen!({
    inline: "
        package switchyard:broker;

        world brokered {
            import switchyard:connector/types@0.1.1;
            import switchyard:connector/log@0.1.1;
            import switchyard:connector/config@0.1.1;
            import switchyard:connector/secrets@0.1.1;
            import switchyard:connector/state@0.1.1;
            import switchyard:connector/rate-limit@0.1.1;
        }
    ",
    path: "../../wit",
    imports: { default: async | trappable },
});

pub use switchyard::connector::types::{
    ActionInfo, ConnectorError, ConnectorInfo, Message, Page, RateLimit, ReadRequest, Role,
    StreamInfo, WebhookRequest, WriteOutcome,
};
