#![no_main]
use jsonlink_fuzz_bodies::relay;
libfuzzer_sys::fuzz_target!(|data: &[u8]| relay(std::time::Instant::now(), data));
