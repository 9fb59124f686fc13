//! A connector for a WIT version this host does not implement.

wit_bindgen::generate!({
    inline: "
        package switchyard:connector@9.0.0;
        interface connector { describe: func() -> string; }
        world plugin { export connector; }
    ",
});

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Future;

impl exports::switchyard::connector::connector::Guest for Future {
    fn describe() -> String {
        "from the future".into()
    }
}

// Exports only on wasm32: native builds of a cdylib cannot link WIT export names.
#[cfg(target_arch = "wasm32")]
export!(Future);
