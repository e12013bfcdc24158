//! The hand-off between callers and the driver thread.
//!
//! Every statement crosses threads twice: the request to the driver thread,
//! the reply back to the caller's task. Done the usual way (a channel that
//! parks the receiver), each crossing wakes a sleeping thread, which on an
//! idle virtual machine costs 5 to 15 µs: more than the statement itself.
//! So each waiting side spins briefly before it sleeps, adaptively (see
//! [`Spin`]), and the exchange is as small as the lease allows:
//!
//! - [`Inbox`]: the driver's requests. The lease keeps one statement in
//!   flight, but a release, an abort after a timeout or a close may queue
//!   behind it, so this is a short queue with one consumer, the driver
//!   thread, which parks when it finds nothing.
//! - [`reply`]: one answer to one request, a single slot the caller's task
//!   awaits.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::spare_cpu;

/// The longest a waiter spins before it sleeps: a statement answered, or a
/// session's next statement sent, sooner than this is caught awake.
const MAX_SPIN: Duration = Duration::from_micros(50);

/// The spin budget a waiter that missed grows back from.
const MIN_SPIN_NS: u32 = 2_000;

/// A gap this long between two looks at the flag means the spinner was
/// descheduled: no core was idle, and spinning only takes time from the
/// thread being waited for.
const PREEMPTED: Duration = Duration::from_micros(20);

/// Waits after a preemption during which the waiter does not spin.
const COOLDOWN: u32 = 256;

/// One waiting side's spin policy, adapted to what the waits turn out to be.
///
/// A waiter spins only while the machine has a core to spare for it
/// ([`spare_cpu`]). Its budget doubles after a wait that spinning caught
/// (or would have caught: one that ended within [`MAX_SPIN`] of its start),
/// halves after a longer one (a burst ended: an idle backend soon stops
/// spinning), and drops to nothing for [`COOLDOWN`] waits when the spinner
/// finds itself descheduled, which means no core was idle after all.
#[derive(Debug)]
pub(crate) struct Spin {
    budget_ns: AtomicU32,
    cooldown: AtomicU32,
}

impl Spin {
    pub(crate) fn new() -> Spin {
        Spin {
            budget_ns: AtomicU32::new(max_spin_ns()),
            cooldown: AtomicU32::new(0),
        }
    }

    /// A waiter that never spins, to test the sleeping path alone.
    #[cfg(test)]
    fn never() -> Spin {
        Spin {
            budget_ns: AtomicU32::new(0),
            cooldown: AtomicU32::new(u32::MAX),
        }
    }

    fn budget(&self) -> Duration {
        Duration::from_nanos(self.budget_ns.load(Ordering::Relaxed).into())
    }

    /// Spins until `done` or the budget runs out; returns whether `done`.
    fn spin_until(&self, done: impl Fn() -> bool) -> bool {
        let budget = self.budget();
        if budget.is_zero() || self.cooling() || !spare_cpu::core_to_spare() {
            return done();
        }
        let started = Instant::now();
        let mut last = started;
        let mut step = 0u32;
        loop {
            if done() {
                self.grow();
                return true;
            }
            // Crossbeam's `Backoff`: a few busy rounds, then give the core
            // to whoever else can use it.
            if step < 6 {
                for _ in 0..(1u32 << step) {
                    std::hint::spin_loop();
                }
                step += 1;
            } else {
                thread::yield_now();
            }
            let now = Instant::now();
            if now - last > PREEMPTED {
                self.preempted();
                return done();
            }
            if now - started > budget {
                return done();
            }
            last = now;
        }
    }

    /// Whether the waiter is in its cooldown after a preemption; counts the
    /// wait.
    fn cooling(&self) -> bool {
        let left = self.cooldown.load(Ordering::Relaxed);
        if left > 0 {
            self.cooldown.store(left - 1, Ordering::Relaxed);
        }
        left > 0
    }

    /// A wait that did not end while spinning ended `waited` after it began.
    fn slept(&self, waited: Duration) {
        if waited <= MAX_SPIN {
            self.grow();
        } else {
            self.adapt(|b| b / 2);
        }
    }

    fn preempted(&self) {
        self.cooldown.store(COOLDOWN, Ordering::Relaxed);
        self.adapt(|_| 0);
    }

    fn grow(&self) {
        self.adapt(|b| b.saturating_mul(2).clamp(MIN_SPIN_NS, max_spin_ns()));
    }

    fn adapt(&self, f: impl Fn(u32) -> u32) {
        // Racing updates lose one adjustment at worst.
        let b = self.budget_ns.load(Ordering::Relaxed);
        self.budget_ns.store(f(b), Ordering::Relaxed);
    }
}

fn max_spin_ns() -> u32 {
    u32::try_from(MAX_SPIN.as_nanos()).unwrap_or(u32::MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; a poisoned one is still
    // consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Queue<T> {
    items: Mutex<Items<T>>,
    /// Items queued, readable without the lock.
    queued: AtomicUsize,
    /// The consumer is parked, or about to park: a sender must unpark it.
    sleeping: AtomicBool,
    consumer: OnceLock<Thread>,
    spin: Spin,
}

struct Items<T> {
    items: VecDeque<T>,
    /// The sender is gone: the consumer stops once the queue is empty.
    sender_gone: bool,
    /// The consumer is gone: sending fails.
    consumer_gone: bool,
}

/// The sending end of an [`Inbox`].
pub(crate) struct Outbox<T> {
    queue: Arc<Queue<T>>,
}

/// The driver thread's queue of requests.
pub(crate) struct Inbox<T> {
    queue: Arc<Queue<T>>,
}

/// A queue with one consumer thread, which spins by a [`Spin`] of its own
/// before it parks.
pub(crate) fn inbox<T>() -> (Outbox<T>, Inbox<T>) {
    inbox_with(Spin::new())
}

fn inbox_with<T>(spin: Spin) -> (Outbox<T>, Inbox<T>) {
    let queue = Arc::new(Queue {
        items: Mutex::new(Items {
            items: VecDeque::new(),
            sender_gone: false,
            consumer_gone: false,
        }),
        queued: AtomicUsize::new(0),
        sleeping: AtomicBool::new(false),
        consumer: OnceLock::new(),
        spin,
    });
    (
        Outbox {
            queue: Arc::clone(&queue),
        },
        Inbox { queue },
    )
}

impl<T> Queue<T> {
    fn wake_consumer(&self) {
        if self.sleeping.load(Ordering::SeqCst)
            && let Some(consumer) = self.consumer.get()
        {
            consumer.unpark();
        }
    }
}

impl<T> Outbox<T> {
    /// Queues `item`; gives it back when the consumer is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        {
            let mut items = lock(&self.queue.items);
            if items.consumer_gone {
                return Err(item);
            }
            items.items.push_back(item);
            self.queue.queued.fetch_add(1, Ordering::SeqCst);
        }
        self.queue.wake_consumer();
        Ok(())
    }
}

impl<T> Drop for Outbox<T> {
    fn drop(&mut self) {
        lock(&self.queue.items).sender_gone = true;
        // Counted as an item, so that a spinning consumer looks now.
        self.queue.queued.fetch_add(1, Ordering::SeqCst);
        self.queue.wake_consumer();
    }
}

impl<T> Inbox<T> {
    /// The next item, waiting for it; `None` once the sender is gone and
    /// everything it sent has been taken.
    pub(crate) fn recv(&self) -> Option<T> {
        let queue = &*self.queue;
        queue.consumer.get_or_init(thread::current);
        // When the wait began, once a first look found nothing, and
        // whether it went on past the spin.
        let mut began = None;
        let mut slept = false;
        loop {
            {
                let mut items = lock(&queue.items);
                if let Some(item) = items.items.pop_front() {
                    queue.queued.fetch_sub(1, Ordering::SeqCst);
                    if let (true, Some(at)) = (slept, began) {
                        queue.spin.slept(Instant::now() - at);
                    }
                    return Some(item);
                }
                if items.sender_gone {
                    return None;
                }
            }
            let ready = || queue.queued.load(Ordering::SeqCst) > 0;
            began.get_or_insert_with(Instant::now);
            if slept || !queue.spin.spin_until(ready) {
                slept = true;
                queue.sleeping.store(true, Ordering::SeqCst);
                // A send after this check sees `sleeping` and unparks.
                if !ready() {
                    thread::park();
                }
                queue.sleeping.store(false, Ordering::SeqCst);
            }
        }
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        // Dropped outside the lock: a request's drop may wake its caller.
        let left = {
            let mut items = lock(&self.queue.items);
            items.consumer_gone = true;
            std::mem::take(&mut items.items)
        };
        drop(left);
    }
}

struct Slot<T> {
    /// The slot holds its final state: a value, or the sender's drop.
    ready: AtomicBool,
    state: Mutex<SlotState<T>>,
}

struct SlotState<T> {
    value: Option<T>,
    waker: Option<Waker>,
    closed: bool,
}

/// Sends the one reply to a request.
pub(crate) struct ReplySender<T> {
    slot: Option<Arc<Slot<T>>>,
}

/// Awaits the one reply to a request: spins by the backend's spin policy on
/// its first poll, then registers its waker. Resolves to `Err(Closed)` when
/// the sender is dropped without replying.
pub(crate) struct Reply<T> {
    slot: Arc<Slot<T>>,
    spin: Arc<Spin>,
    /// When the first poll began waiting, if the spin did not catch the
    /// reply.
    slept_from: Option<Instant>,
    polled: bool,
}

/// The reply's sender was dropped without sending.
#[derive(Debug)]
pub(crate) struct Closed;

/// A single-slot exchange for one reply; the receiver spins by `spin`.
pub(crate) fn reply<T>(spin: &Arc<Spin>) -> (ReplySender<T>, Reply<T>) {
    let slot = Arc::new(Slot {
        ready: AtomicBool::new(false),
        state: Mutex::new(SlotState {
            value: None,
            waker: None,
            closed: false,
        }),
    });
    (
        ReplySender {
            slot: Some(Arc::clone(&slot)),
        },
        Reply {
            slot,
            spin: Arc::clone(spin),
            slept_from: None,
            polled: false,
        },
    )
}

impl<T> ReplySender<T> {
    /// Sends the reply; nobody may be waiting for it any more.
    pub(crate) fn send(mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            slot.fill(Some(value));
        }
    }
}

impl<T> Slot<T> {
    fn fill(&self, value: Option<T>) {
        let waker = {
            let mut state = lock(&self.state);
            match value {
                Some(v) => state.value = Some(v),
                None => state.closed = true,
            }
            self.ready.store(true, Ordering::Release);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for ReplySender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.fill(None);
        }
    }
}

impl<T> Future for Reply<T> {
    type Output = Result<T, Closed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if !this.polled {
            this.polled = true;
            let began = Instant::now();
            let ready = || this.slot.ready.load(Ordering::Acquire);
            if !this.spin.spin_until(ready) {
                this.slept_from = Some(began);
            }
        }
        let mut state = lock(&this.slot.state);
        let taken = state.value.take();
        if taken.is_none() && !state.closed {
            match &state.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        drop(state);
        if let Some(at) = this.slept_from.take() {
            this.spin.slept(Instant::now() - at);
        }
        Poll::Ready(taken.ok_or(Closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_delivers_in_order_and_ends_with_its_sender() {
        let (tx, rx) = inbox::<u32>();
        let consumer = thread::spawn(move || std::iter::from_fn(|| rx.recv()).collect::<Vec<_>>());
        for i in 0..1000 {
            assert!(tx.send(i).is_ok());
        }
        drop(tx);
        let got = consumer.join().expect("the consumer");
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn sending_to_a_gone_consumer_gives_the_item_back() {
        let (tx, rx) = inbox::<u32>();
        drop(rx);
        assert_eq!(tx.send(7).err(), Some(7));
    }

    #[test]
    fn a_reply_is_delivered_and_a_dropped_sender_closes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let spin = Arc::new(Spin::new());
        let (tx, rx) = reply::<u32>(&spin);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(5));
            tx.send(3);
        });
        assert_eq!(rt.block_on(rx).ok(), Some(3));
        let (tx, rx) = reply::<u32>(&spin);
        thread::spawn(move || drop(tx));
        assert!(rt.block_on(rx).is_err());
    }

    #[test]
    fn a_dropped_receiver_does_not_hurt_the_sender() {
        let spin = Arc::new(Spin::never());
        let (tx, rx) = reply::<String>(&spin);
        drop(rx);
        tx.send("nobody listens".into());
    }

    #[test]
    fn spinning_stops_after_long_waits_and_comes_back_for_short_ones() {
        let spin = Spin::new();
        for _ in 0..32 {
            spin.slept(Duration::from_millis(1));
        }
        assert_eq!(spin.budget(), Duration::ZERO);
        spin.slept(Duration::from_micros(5));
        assert!(spin.budget() > Duration::ZERO);
        for _ in 0..32 {
            spin.grow();
        }
        assert_eq!(spin.budget(), MAX_SPIN);
        spin.preempted();
        assert_eq!(spin.budget(), Duration::ZERO);
        assert!((0..COOLDOWN).all(|_| spin.cooling()));
        assert!(!spin.cooling());
    }

    /// Many threads, each a caller in turn (as the lease makes them), and
    /// a driver answering: every request gets its own answer, spinning and
    /// not, with waits both shorter and longer than the spin.
    #[test]
    fn stress_many_callers_one_driver() {
        for spinning in [false, true] {
            let make = || if spinning { Spin::new() } else { Spin::never() };
            let (tx, rx) = inbox_with::<(u64, ReplySender<u64>)>(make());
            let driver = thread::spawn(move || {
                let mut n = 0u64;
                while let Some((v, reply)) = rx.recv() {
                    n += 1;
                    if n.is_multiple_of(97) {
                        thread::sleep(Duration::from_micros(200));
                    }
                    reply.send(v * 2);
                }
                n
            });
            let tx = Arc::new(Mutex::new(tx));
            let spin = Arc::new(make());
            let callers: Vec<_> = (0..16u64)
                .map(|t| {
                    let tx = Arc::clone(&tx);
                    let spin = Arc::clone(&spin);
                    thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .build()
                            .expect("runtime");
                        for i in 0..500u64 {
                            let v = t * 1_000_000 + i;
                            let (reply, answer) = reply(&spin);
                            // Held across the wait: one request in flight,
                            // as under the lease.
                            let outbox = lock(&tx);
                            assert!(outbox.send((v, reply)).is_ok());
                            let got = rt.block_on(answer).expect("an answer");
                            drop(outbox);
                            assert_eq!(got, v * 2);
                            if i.is_multiple_of(50) {
                                // Now and then, a caller that stops waiting.
                                let (reply, answer) = super::reply::<u64>(&spin);
                                drop(answer);
                                assert!(lock(&tx).send((0, reply)).is_ok());
                            }
                        }
                    })
                })
                .collect();
            for c in callers {
                c.join().expect("a caller");
            }
            drop(tx);
            assert_eq!(driver.join().expect("the driver"), 16 * (500 + 10));
        }
    }
}
