//! A connector importing an interface the host does not provide (one
//! from a made-up future version of the package).

wit_bindgen::generate!({
    inline: "
        package switchyard:connector@0.1.1;
        interface queue { publish: func(topic: string) -> bool; }
        interface connector { describe: func() -> string; }
        world plugin { import queue; export connector; }
    ",
});

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Greedy;

impl exports::switchyard::connector::connector::Guest for Greedy {
    fn describe() -> String {
        switchyard::connector::queue::publish("orders").to_string()
    }
}

// Exports only on wasm32: native builds of a cdylib cannot link WIT export names.
#[cfg(target_arch = "wasm32")]
export!(Greedy);
