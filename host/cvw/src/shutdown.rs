//! The one shutdown signal of the host: `cvw serve`'s tasks (watcher, admin and
//! click-to-call APIs, the decision service's listeners and every connection) and the
//! tests' services all select on a [`Shutdown`]; firing or dropping its trigger stops them
//! all, and an open connection closes, which is what a proxy sees when the host goes away.
//!
//! Owns only the signal; what each task does when it fires is the task's business.

use tokio::sync::watch;

/// Resolves [`Shutdown::wait`] once fired; cloned into each task.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and the trigger that fires it (also fired when the trigger is dropped).
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// Resolves once shutdown is requested.
    pub async fn wait(&mut self) {
        // An Err means the trigger was dropped: that is a shutdown too.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Fires [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}
