//! The unbounded queue that carries a leg's events (from the user agent and its client
//! transactions) and a two-leg call's states (to whoever follows the call).
//!
//! Not tokio's mpsc: its channel allocates a 512-byte cache-padded core and a first block
//! of 32 slots when it is made, ~0.8 KiB, and a call keeps three such queues for its whole
//! life (issue 4: ≤ 4 KB of host memory per call). Here a queue is one ~90-byte
//! allocation plus a buffer only while something waits in it. A call's queues see a few
//! messages a second at most, so a plain mutex is enough.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    items: VecDeque<T>,
    /// The receiver's waker while it waits on an empty queue.
    waker: Option<Waker>,
    senders: usize,
    receiver_alive: bool,
}

type Shared<T> = Arc<Mutex<State<T>>>;

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, State<T>> {
    // Nothing panics under the lock; a poisoned queue is still consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes a queue with one sender (clone it for more) and its receiver.
pub fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new(State {
        items: VecDeque::new(),
        waker: None,
        senders: 1,
        receiver_alive: true,
    }));
    (Sender(shared.clone()), Receiver(shared))
}

/// The sending side; cheap to clone.
pub struct Sender<T>(Shared<T>);

impl<T> Sender<T> {
    /// Queues `item`, or hands it back when the receiver is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut state = lock(&self.0);
            if !state.receiver_alive {
                return Err(item);
            }
            state.items.push_back(item);
            state.waker.take()
        };
        // Woken outside the lock: the receiver may run on this thread at once.
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.0).senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = lock(&self.0);
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.waker.take()
        };
        // The last sender is gone: a waiting receiver must learn that nothing more comes.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving side: items in the order they were sent, then `None` once every sender
/// is gone.
pub struct Receiver<T>(Shared<T>);

impl<T> Receiver<T> {
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Closes the queue: later sends fail, handing their item back, and what was still
    /// waiting is returned, so that nothing sent is dropped unseen.
    pub fn close(&mut self) -> VecDeque<T> {
        let mut state = lock(&self.0);
        state.receiver_alive = false;
        std::mem::take(&mut state.items)
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = lock(&self.0);
        if let Some(item) = state.items.pop_front() {
            if state.items.is_empty() {
                // A held call waits for hours between events: its buffer is not kept.
                state.items = VecDeque::new();
            }
            return Poll::Ready(Some(item));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (items, waker) = {
            let mut state = lock(&self.0);
            state.receiver_alive = false;
            (std::mem::take(&mut state.items), state.waker.take())
        };
        // Dropped outside the lock: an item's own drop may send on this queue's senders.
        drop((items, waker));
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("queued", &lock(&self.0).items.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_then_none_when_every_sender_is_gone() {
        let (tx, mut rx) = queue();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        tx2.send(2).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(tx2);
        assert_eq!(waiting.await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send() {
        let (tx, mut rx) = queue();
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send("bye").unwrap();
        assert_eq!(waiting.await.unwrap(), Some("bye"));
    }

    #[test]
    fn close_returns_what_waited_and_refuses_later_sends() {
        let (tx, mut rx) = queue();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(rx.close(), [1, 2]);
        assert_eq!(tx.send(3), Err(3));
    }

    #[test]
    fn a_send_after_the_receiver_is_gone_returns_the_item() {
        let (tx, rx) = queue();
        drop(rx);
        assert_eq!(tx.send(7), Err(7));
    }

    #[test]
    fn a_queue_is_much_smaller_than_a_tokio_channel() {
        let state = std::mem::size_of::<Mutex<State<Box<u8>>>>();
        assert!(state <= 96, "{state} bytes");
    }
}
