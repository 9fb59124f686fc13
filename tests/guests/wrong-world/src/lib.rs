//! A valid component for some other world: the host must refuse it.

wit_bindgen::generate!({
    inline: "
        package acme:other@1.0.0;
        world other { export run: func() -> string; }
    ",
});

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Other;

impl Guest for Other {
    fn run() -> String {
        "not a connector".into()
    }
}

// Exports only on wasm32: native builds of a cdylib cannot link WIT export names.
#[cfg(target_arch = "wasm32")]
export!(Other);
