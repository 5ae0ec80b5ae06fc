#![no_main]

#[path = "../../../crates/issuer/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::acme_handler::acme_handler(data));
