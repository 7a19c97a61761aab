//! Config::parse on any text: never panics; every error names a location inside
//! the file (file:line:column, or the file alone).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pinproxy::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, Path::new("fuzz.toml")) {
        assert!(e.location.starts_with("fuzz.toml"), "{e}");
        if let Some(rest) = e.location.strip_prefix("fuzz.toml:") {
            let line: usize = rest.split(':').next().unwrap().parse().unwrap();
            assert!(
                line >= 1 && line <= text.lines().count().max(1) + 1,
                "{e} in {} lines",
                text.lines().count()
            );
        }
    }
});
