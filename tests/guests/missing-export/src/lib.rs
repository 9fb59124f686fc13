//! Claims the current connector interface but exports only part of it.

wit_bindgen::generate!({
    inline: "
        package switchyard:connector@0.1.0;
        interface connector { describe: func() -> string; }
        world plugin { export connector; }
    ",
});

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Partial;

impl exports::switchyard::connector::connector::Guest for Partial {
    fn describe() -> String {
        "half a connector".into()
    }
}

// Exports only on wasm32: native builds of a cdylib cannot link WIT export names.
#[cfg(target_arch = "wasm32")]
export!(Partial);
