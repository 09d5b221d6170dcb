//! Process gauges for the fault, load and soak tests: resident memory,
//! open file descriptors, CPU time, and a runtime that counts the tasks it
//! spawned which are still alive. Tests that read them run with
//! [`Gauges::Exclusive`](crate::runtimes::Gauges::Exclusive).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident set size of this process in bytes (Linux `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Number of open file descriptors of this process (Linux `/proc/self/fd`).
pub fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// CPU time (user + system) this process has used so far, all threads
/// together (Linux `/proc/self/stat`, in clock ticks of 10 ms: `USER_HZ` is
/// 100 on every mainstream Linux architecture). A task spinning in a busy
/// loop shows up here as about one core's worth of time per second.
pub fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    // utime and stime are fields 14 and 15 of the whole line: 12th and
    // 13th after the command name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// A [`jsonlink_rt::Runtime`] that counts the tasks it spawned which are
/// still alive, so a test can assert that none leaked; a task spinning in a
/// busy loop is a live task too, so "back to baseline" also rules that out.
#[derive(Debug)]
pub struct CountingRuntime {
    inner: Arc<dyn jsonlink_rt::Runtime>,
    live: Arc<tokio::sync::watch::Sender<usize>>,
}

/// Decrements the live count when a counted task ends (or is dropped).
struct TaskGuard(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl CountingRuntime {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn jsonlink_rt::Runtime>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            live: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// Tasks spawned through this runtime that have not ended.
    pub fn live(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits until exactly `n` spawned tasks are alive.
    pub async fn until_live(&self, n: usize) {
        let mut rx = self.live.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = rx.wait_for(|live| *live == n).await;
    }
}

impl jsonlink_rt::Runtime for CountingRuntime {
    fn spawn(&self, future: jsonlink_rt::BoxFuture<'static, ()>) {
        self.live.send_modify(|n| *n += 1);
        let guard = TaskGuard(self.live.clone());
        self.inner.spawn(Box::pin(async move {
            let _guard = guard;
            future.await;
        }));
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep_until(&self, deadline: Instant) -> jsonlink_rt::BoxFuture<'static, ()> {
        self.inner.sleep_until(deadline)
    }

    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> jsonlink_rt::BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        self.inner.resolve(host, port)
    }

    fn bind(
        &self,
        addr: SocketAddr,
    ) -> jsonlink_rt::BoxFuture<'_, io::Result<Box<dyn jsonlink_rt::Listener>>> {
        self.inner.bind(addr)
    }

    fn connect_tls(
        &self,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls_pki_types::ServerName<'static>,
    ) -> jsonlink_rt::BoxFuture<'static, io::Result<jsonlink_rt::TlsStream>> {
        self.inner.connect_tls(addr, config, server_name)
    }
}

/// Asserts that this process's open descriptors come back to `baseline`
/// within `timeout` (a closed socket is released when its task next runs,
/// which has no event to await).
pub async fn assert_fds_back_to(baseline: usize, timeout: Duration) {
    assert!(
        crate::waits::eventually(timeout, || open_fds() == Some(baseline)).await,
        "open fds {:?}, expected back to {baseline}",
        open_fds()
    );
}
