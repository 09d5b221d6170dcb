//! The runtimes a test runs on, each started for the test and bounded in
//! time: tokio's multi-threaded runtime, smol (its global executor, or an
//! executor of the test's own on N threads or on the test thread),
//! async-std; and the runners that put a test body on them — one runtime,
//! each runtime, or tokio and smol both with outcomes that must agree.
//!
//! Every runner fails the test after its limit ([`LIMIT`] unless told),
//! and takes the binary's gauge lock (see [`Gauges`]).

use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use jsonlink_rt::Runtime;

use crate::waits::within;

/// Upper bound on one test's body.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Tests reading process-wide gauges hold this exclusively (one per test
/// binary: each binary is its own process).
static GAUGES: RwLock<()> = RwLock::new(());

/// Whether a test may run beside others of its binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauges {
    /// Runs alongside other tests.
    Shared,
    /// Runs alone in this binary (reads fd counts or RSS).
    Exclusive,
}

/// [`GAUGES`] held as a [`Gauges`] mode asks, for as long as it lives.
#[allow(dead_code)] // held for its drop only
enum GaugeLock {
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

impl Gauges {
    fn lock(self) -> GaugeLock {
        match self {
            Self::Shared => GaugeLock::Shared(GAUGES.read().unwrap_or_else(|e| e.into_inner())),
            Self::Exclusive => {
                GaugeLock::Exclusive(GAUGES.write().unwrap_or_else(|e| e.into_inner()))
            }
        }
    }
}

/// A runtime the harness can start for a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// tokio's multi-threaded runtime with 2 workers, built for the test.
    Tokio,
    /// async-std's global executor.
    AsyncStd,
    /// smol's global executor (`jsonlink_smol::runtime()`).
    Smol,
    /// smol with an executor of the test's own, run by this many threads
    /// of its own (with one thread, handlers spawned as tasks of their own
    /// happen to keep their order: two show what only holds by chance).
    SmolThreads(usize),
    /// smol with an executor of the test's own whose tasks run only while
    /// the test thread drives the test (`SmolRuntime::on`).
    SmolOnTestThread,
}

/// What keeps a started runtime's tasks running.
enum Engine {
    Tokio(tokio::runtime::Runtime),
    /// A global executor: nothing to hold.
    Global,
    Threads {
        stop: Option<async_channel::Sender<()>>,
        workers: Vec<JoinHandle<()>>,
    },
    TestThread(Arc<smol::Executor<'static>>),
}

/// A runtime started for a test; dropping it stops what the test started
/// (the tokio runtime, the executor threads).
pub struct Started {
    kind: RuntimeKind,
    rt: Arc<dyn Runtime>,
    engine: Engine,
}

impl RuntimeKind {
    /// Starts this runtime.
    pub fn start(self) -> Started {
        let (rt, engine): (Arc<dyn Runtime>, Engine) = match self {
            Self::Tokio => {
                let tokio = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let rt = Arc::new(jsonlink_tokio::TokioRuntime::from_handle(
                    tokio.handle().clone(),
                ));
                (rt, Engine::Tokio(tokio))
            }
            Self::AsyncStd => (jsonlink_async_std::runtime(), Engine::Global),
            Self::Smol => (jsonlink_smol::runtime(), Engine::Global),
            Self::SmolThreads(threads) => {
                let ex = Arc::new(smol::Executor::new());
                let (stop, stopped) = async_channel::bounded::<()>(1);
                let workers = (0..threads)
                    .map(|_| {
                        let (ex, stopped) = (ex.clone(), stopped.clone());
                        std::thread::spawn(move || {
                            futures_lite::future::block_on(ex.run(async {
                                let _ = stopped.recv().await;
                            }));
                        })
                    })
                    .collect();
                let rt = Arc::new(jsonlink_smol::SmolRuntime::on(ex));
                let engine = Engine::Threads {
                    stop: Some(stop),
                    workers,
                };
                (rt, engine)
            }
            Self::SmolOnTestThread => {
                let ex = Arc::new(smol::Executor::new());
                let rt = Arc::new(jsonlink_smol::SmolRuntime::on(ex.clone()));
                (rt, Engine::TestThread(ex))
            }
        };
        Started {
            kind: self,
            rt,
            engine,
        }
    }
}

impl Started {
    /// The runtime, as servers and clients take it.
    pub fn rt(&self) -> Arc<dyn Runtime> {
        self.rt.clone()
    }

    /// Which runtime this is.
    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// Drives `fut` on the test thread inside this runtime's context (so
    /// tokio's sockets and timers work in it), failing after `limit`.
    pub fn run<T>(&self, limit: Duration, fut: impl Future<Output = T>) -> T {
        let bounded = within(limit, fut);
        let out = match &self.engine {
            Engine::Tokio(tokio) => tokio.block_on(bounded),
            Engine::TestThread(ex) => futures_lite::future::block_on(ex.run(bounded)),
            Engine::Global | Engine::Threads { .. } => futures_lite::future::block_on(bounded),
        };
        out.unwrap_or_else(|| panic!("{:?}: the test did not finish within {limit:?}", self.kind))
    }

    /// Drives `fut` on the test thread outside any runtime's context: only
    /// the runtime's own threads run its tasks, so a runtime that needs an
    /// ambient context fails here. (An executor that runs on the test thread
    /// runs inside the drive, as it must.)
    pub fn run_from_outside<T>(&self, limit: Duration, fut: impl Future<Output = T>) -> T {
        match &self.engine {
            Engine::TestThread(_) => self.run(limit, fut),
            _ => block_on_within(limit, fut),
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Engine::Threads { stop, workers } = &mut self.engine {
            drop(stop.take());
            for w in workers.drain(..) {
                w.join().expect("an executor thread panicked");
            }
        }
    }
}

/// Drives `fut` on the test thread with no runtime of its own (the
/// runtimes it uses run their tasks on their threads), failing after
/// `limit`.
pub fn block_on_within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    futures_lite::future::block_on(within(limit, fut))
        .unwrap_or_else(|| panic!("the test did not finish within {limit:?}"))
}

/// Runs `test` on a started `kind`, holding the gauge lock as `gauges`
/// says, failing after `limit`.
pub fn on<T, F, Fut>(kind: RuntimeKind, gauges: Gauges, limit: Duration, test: F) -> T
where
    F: FnOnce(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = T>,
{
    let _gauges = gauges.lock();
    let started = kind.start();
    started.run(limit, test(started.rt()))
}

/// Runs `test` on a multi-threaded tokio runtime built for it, failing
/// after [`LIMIT`].
pub fn on_tokio<T, F, Fut>(gauges: Gauges, test: F) -> T
where
    F: FnOnce(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = T>,
{
    on(RuntimeKind::Tokio, gauges, LIMIT, test)
}

/// [`on_tokio`] failing after `limit`.
pub fn on_tokio_within<T, F, Fut>(limit: Duration, gauges: Gauges, test: F) -> T
where
    F: FnOnce(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = T>,
{
    on(RuntimeKind::Tokio, gauges, limit, test)
}

/// Runs `test` on smol's global executor, driven from the test thread,
/// failing after [`LIMIT`].
pub fn on_smol<T, F, Fut>(test: F) -> T
where
    F: FnOnce(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = T>,
{
    on(RuntimeKind::Smol, Gauges::Shared, LIMIT, test)
}

/// Runs `test` on smol with an executor run by `threads` threads of its
/// own, failing after [`LIMIT`].
pub fn on_smol_threads<T, F, Fut>(threads: usize, test: F) -> T
where
    F: FnOnce(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = T>,
{
    on(
        RuntimeKind::SmolThreads(threads),
        Gauges::Shared,
        LIMIT,
        test,
    )
}

/// The runtimes [`on_each_runtime`] checks: every adapter, and smol both
/// on its global executor and on one the test runs.
pub const EACH_RUNTIME: [RuntimeKind; 4] = [
    RuntimeKind::Tokio,
    RuntimeKind::AsyncStd,
    RuntimeKind::Smol,
    RuntimeKind::SmolOnTestThread,
];

/// Runs `body` on each of [`EACH_RUNTIME`] in turn, driven from the test
/// thread outside the runtime's context, each bounded by [`LIMIT`].
pub fn on_each_runtime<F, Fut>(body: F)
where
    F: Fn(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = ()>,
{
    let _gauges = Gauges::Shared.lock();
    for kind in EACH_RUNTIME {
        let started = kind.start();
        started.run_from_outside(LIMIT, body(started.rt()));
    }
}

/// Runs `body` on tokio (multi-threaded, 2 workers) and on smol (an
/// executor run by 2 threads); the outcome, which must be the same on both.
pub fn on_both<T, F, Fut>(body: F) -> T
where
    T: PartialEq + Debug,
    F: Fn(Arc<dyn Runtime>) -> Fut,
    Fut: Future<Output = T>,
{
    let on_tokio_outcome = on_tokio(Gauges::Shared, &body);
    let on_smol_outcome = on_smol_threads(2, &body);
    assert_eq!(
        on_tokio_outcome, on_smol_outcome,
        "tokio and smol observe the same outcome"
    );
    on_tokio_outcome
}

/// Two `#[test]`s running one async body (`async fn(Arc<dyn Runtime>)`):
/// the first named on tokio ([`on_tokio`], gauges shared), the second on
/// smol's global executor ([`on_smol`]). Written
/// `tests_on_tokio_and_smol!(body => name_on_tokio, name_on_smol);`.
#[macro_export]
macro_rules! tests_on_tokio_and_smol {
    ($body:path => $on_tokio:ident, $on_smol:ident) => {
        #[test]
        fn $on_tokio() {
            $crate::runtimes::on_tokio($crate::runtimes::Gauges::Shared, $body);
        }

        #[test]
        fn $on_smol() {
            $crate::runtimes::on_smol($body);
        }
    };
}
