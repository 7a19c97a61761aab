//! CertPin::parse on any text (hex, Gaia's SHA1 and words lines, the whole
//! `api fingerprint` paste, curl's sha256//): never panics, and whatever it
//! accepts prints in a form that parses back to the same pin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinproxy::tls::pin::CertPin;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pin) = CertPin::parse(text) {
        let printed = pin.to_string();
        let again = CertPin::parse(&printed).expect("a printed pin parses");
        assert_eq!(again, pin, "{text:?} printed as {printed:?}");
    }
});
