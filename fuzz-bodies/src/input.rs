//! What the input bytes mean: a reader that yields zeros past the end, and
//! the bodies, texts, chunk sizes, policies and limits it decodes.

use std::time::Duration;

use jsonlink_proto::{Config, Keepalive, Policy};
use serde_json::value::RawValue;

/// Reads the fuzz input front to back; past the end it yields zeros.
pub(crate) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// `n % 8` chunk sizes of one byte each.
    pub(crate) fn split_sizes(&mut self) -> Vec<usize> {
        let n = self.byte() % 8;
        (0..n).map(|_| usize::from(self.byte())).collect()
    }

    /// A valid JSON value of a data-chosen shape and size.
    pub(crate) fn body(&mut self) -> Box<RawValue> {
        let text = match self.byte() % 6 {
            0 => "null".to_owned(),
            1 => self.u16().to_string(),
            2 => {
                // Past the small limits (1024-byte frames, 512 bytes
                // outbound), and no bigger: large bodies only cost time.
                let n = usize::from(self.u16() % 1280);
                format!("\"{}\"", "x".repeat(n))
            }
            3 => {
                let op = self.byte();
                let n = self.u16();
                format!("{{\"op\":\"op{op}\",\"n\":{n}}}")
            }
            4 => {
                let n = usize::from(self.byte() % 64);
                let raw = self.take(n);
                serde_json::to_string(&String::from_utf8_lossy(raw)).unwrap()
            }
            _ => r#"[1,{"a":[]},"\u00e9\n",-0.5e3,true]"#.to_owned(),
        };
        RawValue::from_string(text).unwrap()
    }

    /// A short string of arbitrary (lossily decoded) bytes.
    pub(crate) fn text(&mut self) -> String {
        let n = usize::from(self.byte() % 32);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }
}

/// The policy named by the two low bits.
pub(crate) fn policy(bits: u8) -> Policy {
    match bits & 3 {
        0 => Policy::Off,
        1 => Policy::Optional,
        2 => Policy::Preferred,
        _ => Policy::Required,
    }
}

/// Tight limits and short timeouts, so the fuzzer reaches them.
pub(crate) fn small_limits(c: &mut Config) {
    c.pre_auth_max_frame = 512;
    c.max_frame = 1024;
    c.max_outbound = 512;
    c.max_requests_in_flight = 3;
    c.max_incoming_requests = 2;
    c.handshake_timeout = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(2);
    c.close_timeout = Duration::from_secs(1);
    c.keepalive = Some(Keepalive {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        data: None,
    });
}
