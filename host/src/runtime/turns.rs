//! CPU turns: fair scheduling of guest code between plugins.
//!
//! Guest code runs only while its call holds a turn. There are as many
//! turns as the guest pool has threads, and one plugin holds at most all
//! but one of them, so a plugin that spins on every call it may make still
//! leaves a turn to everyone else. At an epoch tick a running guest that
//! has held its turn for a [`QUANTUM`] gives it back if anyone waits, and
//! waits again behind them.
//!
//! Waiting calls are queued per plugin, and a freed turn goes to the
//! waiting plugin that was granted one longest ago: the plugins take turns
//! in a rotation, and a plugin's calls share that plugin's place in it.
//! Eight spinning calls of one plugin and one call of another alternate,
//! one turn each, instead of the other plugin waiting behind all eight.
//!
//! A call of a plugin that holds no turn, arriving when none is free, kicks
//! the engine's epoch (`Engine::increment_epoch`, which any thread may call)
//! so the running guests reach their epoch callback at their next check
//! instead of at the next tick, and one of them hands its turn over.
//!
//! A turn is kept for at least [`QUANTUM`] before it is handed on. Without
//! it, every arrival preempted the guests running at that moment: under
//! load (64 concurrent admin events, each a 0.1 ms greeter call) calls
//! spent their time handing turns back and forth instead of finishing,
//! and an event waited 45 ms for its turn after its broadcast's commit
//! (the `end to end` benchmark, BENCHMARKS.md).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::capabilities::CallTurn;

/// How long a call keeps its turn before it hands it to a waiting one: one
/// epoch tick ([`super::engine::EPOCH_TICK`]). Most calls finish within it
/// and never hand their turn over mid-call; a guest that spins still
/// yields within about two ticks of a neighbour's arrival.
pub const QUANTUM: Duration = super::engine::EPOCH_TICK;

/// The scheduler's state. Plugins are keyed by name, so the calls of every
/// loaded version of one plugin share one place in the rotation.
struct State {
    free: usize,
    per_plugin: usize,
    held: HashMap<Arc<str>, usize>,
    /// Waiting calls per plugin; only plugins with waiting calls.
    queues: HashMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
    /// When each plugin was last granted a turn (a grant count): the next
    /// turn goes to the waiting plugin served longest ago, so a plugin
    /// whose only call hands its turn back and waits again is next in line,
    /// not behind a plugin with many calls.
    served: HashMap<Arc<str>, u64>,
    grants: u64,
    /// Every grant, in order, while `record` is on (tests).
    granted: Option<Vec<Arc<str>>>,
}

impl State {
    fn held(&self, plugin: &str) -> usize {
        self.held.get(plugin).copied().unwrap_or(0)
    }

    /// Hands free turns to waiting calls, the plugin served longest ago
    /// first.
    fn grant(&mut self) {
        while self.free > 0 {
            let Some(plugin) = self
                .queues
                .keys()
                .filter(|p| self.held(p) < self.per_plugin)
                .min_by_key(|p| (self.served.get(*p).copied().unwrap_or(0), Arc::clone(p)))
                .cloned()
            else {
                return;
            };
            let queue = self.queues.entry(plugin.clone()).or_default();
            // A waiter whose call was dropped meanwhile refuses the turn.
            let mut given = false;
            while let Some(tx) = queue.pop_front() {
                if tx.send(()).is_ok() {
                    given = true;
                    break;
                }
            }
            if queue.is_empty() {
                self.queues.remove(&plugin);
            }
            if given {
                self.free -= 1;
                self.grants += 1;
                *self.held.entry(plugin.clone()).or_insert(0) += 1;
                self.served.insert(plugin.clone(), self.grants);
                if let Some(log) = &mut self.granted {
                    log.push(plugin);
                }
            }
        }
    }
}

/// The guest turns of one runtime.
pub struct Turns {
    state: Mutex<State>,
    capacity: usize,
    /// Makes running guests reach their epoch callback now.
    kick: Box<dyn Fn() + Send + Sync>,
}

impl Turns {
    /// `capacity` turns; one plugin holds at most `capacity - 1` of them
    /// (at least one). `kick` is called when a plugin holding no turn has
    /// to wait for one.
    pub fn new(capacity: usize, kick: impl Fn() + Send + Sync + 'static) -> Arc<Turns> {
        let capacity = capacity.max(1);
        Arc::new(Turns {
            state: Mutex::new(State {
                free: capacity,
                per_plugin: (capacity - 1).max(1),
                held: HashMap::new(),
                queues: HashMap::new(),
                served: HashMap::new(),
                grants: 0,
                granted: None,
            }),
            capacity,
            kick: Box::new(kick),
        })
    }

    /// How many turns there are: one per guest thread.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many turns one plugin may hold at once.
    pub fn per_plugin(&self) -> usize {
        self.lock().per_plugin
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements that can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts recording every grant's plugin, for [`Turns::granted`].
    pub fn record(&self) {
        self.lock().granted = Some(Vec::new());
    }

    /// The plugins granted a turn since [`Turns::record`], in order.
    pub fn granted(&self) -> Vec<String> {
        self.lock()
            .granted
            .as_ref()
            .map(|g| g.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default()
    }

    /// Waits for a turn for one call of `plugin`.
    pub fn acquire(self: &Arc<Self>, plugin: &str) -> Acquire {
        let plugin: Arc<str> = Arc::from(plugin);
        let (tx, rx) = oneshot::channel();
        let kick = {
            let mut state = self.lock();
            state
                .queues
                .entry(plugin.clone())
                .or_default()
                .push_back(tx);
            state.grant();
            state.free == 0 && state.held(&plugin) == 0
        };
        if kick {
            (self.kick)();
        }
        Acquire {
            turns: self.clone(),
            plugin,
            rx,
        }
    }

    /// Whether every turn is free and no call waits for one.
    pub fn idle(&self) -> bool {
        let state = self.lock();
        state.free == self.capacity && state.queues.is_empty()
    }

    /// Whether a call holding a turn should give it back: someone waits.
    pub fn contended(&self) -> bool {
        !self.lock().queues.is_empty()
    }

    fn release(&self, plugin: &Arc<str>) {
        let mut state = self.lock();
        match state.held.get_mut(plugin) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                state.held.remove(plugin);
            }
            None => return,
        }
        state.free += 1;
        state.grant();
    }
}

/// One call's turn, as its store keeps it: the epoch callback gives it
/// back when others wait and takes it again, and so may a host function
/// that waits off the guest threads ([`CallTurn`]).
pub struct TurnSlot {
    /// The turn, and since when this call has held it.
    held: Mutex<Option<(Turn, Instant)>>,
    turns: Arc<Turns>,
    plugin: Arc<str>,
}

impl TurnSlot {
    /// A slot holding `turn`, a turn of `plugin`'s.
    pub fn holding(turns: Arc<Turns>, plugin: &str, turn: Turn) -> Arc<TurnSlot> {
        Arc::new(TurnSlot {
            held: Mutex::new(Some((turn, Instant::now()))),
            turns,
            plugin: Arc::from(plugin),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<(Turn, Instant)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the call holds its turn now.
    pub fn holds(&self) -> bool {
        self.lock().is_some()
    }

    /// Whether the call should hand its turn to a waiting one now: it
    /// holds it, someone waits, and it has had its [`QUANTUM`].
    pub fn should_yield(&self) -> bool {
        self.should_yield_at(Instant::now())
    }

    /// [`TurnSlot::should_yield`] at `now`.
    fn should_yield_at(&self, now: Instant) -> bool {
        let since = match &*self.lock() {
            Some((_, since)) => *since,
            None => return false,
        };
        now.saturating_duration_since(since) >= QUANTUM && self.turns.contended()
    }

    /// Since when the call has held its turn, if it holds one.
    #[cfg(test)]
    fn held_since(&self) -> Option<Instant> {
        self.lock().as_ref().map(|(_, since)| *since)
    }
}

impl CallTurn for TurnSlot {
    fn give_back(&self) {
        // Dropped outside the lock: its release may grant it on at once.
        let turn = self.lock().take();
        drop(turn);
    }

    fn take_again(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if self.holds() {
                return;
            }
            // In the rotation behind the calls that waited first. Dropped
            // here (the call timed out), the wait leaves the queue.
            let turn = self.turns.acquire(&self.plugin).await;
            *self.lock() = Some((turn, Instant::now()));
        })
    }
}

/// A held turn; dropping it hands it on.
pub struct Turn {
    turns: Arc<Turns>,
    plugin: Arc<str>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.release(&self.plugin);
    }
}

/// A call waiting for its turn. Dropped before it is granted, it leaves
/// the queue; dropped after, it hands the turn on.
pub struct Acquire {
    turns: Arc<Turns>,
    plugin: Arc<str>,
    rx: oneshot::Receiver<()>,
}

impl Future for Acquire {
    type Output = Turn;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(())) => {
                // Consumed: Drop below must not release it again.
                let (_, closed) = oneshot::channel();
                self.rx = closed;
                Poll::Ready(Turn {
                    turns: self.turns.clone(),
                    plugin: self.plugin.clone(),
                })
            }
            // The sender lives in the queue until it grants; it is only
            // dropped unsent if the whole scheduler is.
            Poll::Ready(Err(_)) => Poll::Pending,
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.turns.release(&self.plugin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Plugin `a` runs eight calls that each want a turn again and again,
    /// plugin `b` one: `b` gets every other turn, not every ninth (which a
    /// first-come queue of calls, such as tokio's fair semaphore, gives).
    #[tokio::test(flavor = "current_thread")]
    async fn one_plugins_many_calls_share_one_place_in_the_rotation() {
        let kicks = Arc::new(AtomicUsize::new(0));
        let k = kicks.clone();
        let turns = Turns::new(1, move || {
            k.fetch_add(1, Ordering::Relaxed);
        });
        turns.record();
        let mut tasks = Vec::new();
        for (plugin, calls) in [("a", 8), ("b", 1)] {
            for _ in 0..calls {
                let turns = turns.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..20 {
                        let turn = turns.acquire(plugin).await;
                        // Compute for a "tick", then hand the turn on.
                        tokio::task::yield_now().await;
                        drop(turn);
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let granted = turns.granted();
        assert_eq!(granted.len(), 9 * 20);
        let b: Vec<usize> = granted
            .iter()
            .enumerate()
            .filter(|(_, p)| *p == "b")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(b.len(), 20);
        // From b's first turn on, b never waits for more than one of a's.
        for pair in b.windows(2) {
            assert!(
                pair[1] - pair[0] <= 2,
                "b waited {} turns: {granted:?}",
                pair[1] - pair[0] - 1
            );
        }
        assert!(b[0] <= 2, "b's first turn came at {}", b[0]);
        assert!(kicks.load(Ordering::Relaxed) > 0, "b's arrival kicks");
    }

    /// One plugin holds at most all turns but one; another plugin gets the
    /// last one without waiting.
    #[tokio::test(flavor = "current_thread")]
    async fn one_plugin_leaves_a_turn_to_the_others() {
        let turns = Turns::new(3, || {});
        assert_eq!(turns.per_plugin(), 2);
        let a1 = turns.acquire("a").await;
        let _a2 = turns.acquire("a").await;
        let mut a3 = Box::pin(turns.acquire("a"));
        assert!(futures_poll_once(&mut a3).is_none(), "a's third call waits");
        let b = turns.acquire("b").await;
        drop(b);
        // A freed turn of a's goes to a's waiting call.
        drop(a1);
        assert!(futures_poll_once(&mut a3).is_some());
    }

    /// A waiting call that is dropped leaves the queue, and one dropped
    /// after its grant hands the turn on.
    #[tokio::test(flavor = "current_thread")]
    async fn dropped_waiters_lose_no_turns() {
        let turns = Turns::new(1, || {});
        let held = turns.acquire("a").await;
        let gone = turns.acquire("b");
        let granted_then_dropped = turns.acquire("c");
        drop(gone);
        drop(held); // grants c, whose future is never polled again
        drop(granted_then_dropped);
        let again = turns.acquire("d");
        let mut again = Box::pin(again);
        assert!(futures_poll_once(&mut again).is_some(), "the turn is free");
    }

    /// A call keeps its turn for a quantum even when others wait: an
    /// arrival does not preempt a call that has only just started (each
    /// arrival did, and under load calls spent their time handing turns
    /// back and forth). Past the quantum, it hands the turn over when
    /// someone waits, and only then.
    #[tokio::test(flavor = "current_thread")]
    async fn a_call_keeps_its_turn_for_a_quantum_before_handing_it_on() {
        let turns = Turns::new(2, || {});
        let slot = TurnSlot::holding(turns.clone(), "a", turns.acquire("a").await);
        let since = slot.held_since().expect("holds its turn");
        let later = |d: Duration| since + d;
        assert!(!slot.should_yield_at(later(QUANTUM)), "nobody waits yet");
        // The other turn is taken, and a third call waits.
        let _b = turns.acquire("b").await;
        let mut waiting = Box::pin(turns.acquire("c"));
        assert!(futures_poll_once(&mut waiting).is_none());
        assert!(turns.contended());
        assert!(
            !slot.should_yield_at(later(Duration::ZERO)),
            "preempted the moment a call arrived"
        );
        assert!(!slot.should_yield_at(later(QUANTUM / 2)));
        assert!(slot.should_yield_at(later(QUANTUM)));
        // Handed on, the turn goes to the waiting call.
        slot.give_back();
        assert!(futures_poll_once(&mut waiting).is_some());
        assert!(!slot.should_yield_at(later(QUANTUM)), "holds no turn");
    }

    fn futures_poll_once(f: &mut Pin<Box<Acquire>>) -> Option<Turn> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(t) => Some(t),
            Poll::Pending => None,
        }
    }
}
