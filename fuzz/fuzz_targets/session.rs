#![no_main]
use jsonlink_fuzz_bodies::session;
libfuzzer_sys::fuzz_target!(|data: &[u8]| session(std::time::Instant::now(), data));
