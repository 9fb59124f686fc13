//! A connector importing an interface the host does not provide.

wit_bindgen::generate!({
    inline: "
        package switchyard:connector@0.1.0;
        interface secrets { get: func(name: string) -> option<string>; }
        interface connector { describe: func() -> string; }
        world plugin { import secrets; export connector; }
    ",
});

struct Greedy;

impl exports::switchyard::connector::connector::Guest for Greedy {
    fn describe() -> String {
        switchyard::connector::secrets::get("stripe").unwrap_or_default()
    }
}

export!(Greedy);
