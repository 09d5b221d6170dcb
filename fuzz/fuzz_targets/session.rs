#![no_main]
use jsonlink_proto::fuzz::session;
libfuzzer_sys::fuzz_target!(|data: &[u8]| session(std::time::Instant::now(), data));
