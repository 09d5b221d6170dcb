#![no_main]
use jsonlink_fuzz_bodies::handshake_client;
libfuzzer_sys::fuzz_target!(|data: &[u8]| handshake_client(std::time::Instant::now(), data));
