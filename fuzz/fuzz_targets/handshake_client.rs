#![no_main]
use jsonlink_proto::fuzz::handshake_client;
libfuzzer_sys::fuzz_target!(|data: &[u8]| handshake_client(std::time::Instant::now(), data));
