//! A connector importing an interface the host does not provide.

wit_bindgen::generate!({
    inline: "
        package switchyard:connector@0.1.0;
        interface secrets { get: func(name: string) -> option<string>; }
        interface connector { describe: func() -> string; }
        world plugin { import secrets; export connector; }
    ",
});

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Greedy;

impl exports::switchyard::connector::connector::Guest for Greedy {
    fn describe() -> String {
        switchyard::connector::secrets::get("stripe").unwrap_or_default()
    }
}

// Exports only on wasm32: native builds of a cdylib cannot link WIT export names.
#[cfg(target_arch = "wasm32")]
export!(Greedy);
