//! A valid component for some other world: the host must refuse it.

wit_bindgen::generate!({
    inline: "
        package acme:other@1.0.0;
        world other { export run: func() -> string; }
    ",
});

struct Other;

impl Guest for Other {
    fn run() -> String {
        "not a connector".into()
    }
}

export!(Other);
