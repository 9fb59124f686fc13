//! A connector for a WIT version this host does not implement.

wit_bindgen::generate!({
    inline: "
        package switchyard:connector@9.0.0;
        interface connector { describe: func() -> string; }
        world plugin { export connector; }
    ",
});

struct Future;

impl exports::switchyard::connector::connector::Guest for Future {
    fn describe() -> String {
        "from the future".into()
    }
}

export!(Future);
