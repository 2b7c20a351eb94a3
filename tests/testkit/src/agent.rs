//! The agent in-process: [`ipvs_proxy::agent::run`] on its own tokio runtime, on a
//! thread that joined the node's network namespace, stopped through its shutdown
//! future. No binary, no signals: a test starts and stops it like any value, and its
//! log lands in a file the cluster fixture prints when the test fails.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ipvs_proxy::agent::{AgentError, AgentOptions};
use netns_lab::Netns;
use tokio::sync::oneshot;

/// A running in-process agent; stopped (and waited for) on drop.
#[derive(Debug)]
pub struct InProcessAgent {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), AgentError>>>,
}

impl InProcessAgent {
    /// Starts the agent with `options` inside `node`, logging (at `debug` for the
    /// agent, `info` otherwise, as `RUST_LOG` would say) to `log`.
    pub fn start(node: &Netns, options: AgentOptions, log: &Path) -> InProcessAgent {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let subscriber = Arc::new(
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,ipvs_proxy=debug".into()),
                )
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .finish(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = node.thread(move || {
            // A subscriber per thread, not the process's global one: agents of tests
            // running in parallel each log to their own file. Runtime threads are
            // created from this one and set it too.
            let _guard = tracing::subscriber::set_default(subscriber.clone());
            let for_workers = subscriber.clone();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .on_thread_start(move || {
                    // Lives as long as the thread: the guard is never dropped.
                    std::mem::forget(tracing::subscriber::set_default(for_workers.clone()));
                })
                .build()
                .expect("a tokio runtime starts");
            runtime.block_on(ipvs_proxy::agent::run(options, async {
                let _ = stopped.await;
            }))
        });
        InProcessAgent {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Whether the agent stopped on its own (an error, or its source ended).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the agent and returns how its run ended; a panic in it is propagated.
    pub fn stop(mut self) -> Result<(), AgentError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), AgentError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            None => Ok(()),
        }
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Not while unwinding a failed test: a second panic would abort.
            match thread.join() {
                Ok(Err(err)) if !std::thread::panicking() => {
                    panic!("the in-process agent failed: {err}")
                }
                Err(panic) if !std::thread::panicking() => std::panic::resume_unwind(panic),
                _ => {}
            }
        }
    }
}
