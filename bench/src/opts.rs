//! The command line's `--key value` options.

use std::collections::HashMap;
use std::time::Duration;

/// Parsed `--key value` options (`--quick` alone takes no value).
#[derive(Debug, Clone, Default)]
pub(crate) struct Opts(HashMap<String, String>);

impl Opts {
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(k) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if k == "quick" {
                m.insert(k.to_owned(), "1".to_owned());
                continue;
            }
            let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
            m.insert(k.to_owned(), v.clone());
        }
        Ok(Self(m))
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub(crate) fn str_or<'a>(&'a self, k: &str, d: &'a str) -> &'a str {
        self.get(k).unwrap_or(d)
    }

    pub(crate) fn num<T: std::str::FromStr>(&self, k: &str, d: T) -> T {
        self.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
    }

    pub(crate) fn secs(&self, k: &str, d: f64) -> Duration {
        Duration::from_secs_f64(self.num(k, d))
    }

    /// The warm-up before each measured run (`--warmup`, default 0.3 s).
    pub(crate) fn warmup(&self) -> Duration {
        self.secs("warmup", 0.3)
    }

    /// How long each measured run lasts (`--secs`, default 1 s).
    pub(crate) fn measured(&self) -> Duration {
        self.secs("secs", 1.0)
    }
}
