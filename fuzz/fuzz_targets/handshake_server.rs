#![no_main]
use jsonlink_fuzz_bodies::handshake_server;
libfuzzer_sys::fuzz_target!(|data: &[u8]| handshake_server(std::time::Instant::now(), data));
