//! Cross-role end-to-end tests and benches of localcert (publish = false): the UA
//! (`localcert-ua`), the device engine (`localcert-device`) and the issuer
//! (`localcert-issuer`) in one process, the UA reaching the device over the in-memory BLE
//! link. The library is empty; see `tests/` and `benches/`.
//!
//! `cargo test -p localcert-e2e`, `cargo bench -p localcert-e2e --bench ble`.

#![forbid(unsafe_code)]
