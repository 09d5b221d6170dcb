#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| jsonlink_fuzz_bodies::framer(data));
