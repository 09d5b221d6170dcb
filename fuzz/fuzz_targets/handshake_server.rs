#![no_main]
use jsonlink_proto::fuzz::handshake_server;
libfuzzer_sys::fuzz_target!(|data: &[u8]| handshake_server(std::time::Instant::now(), data));
