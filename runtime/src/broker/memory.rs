//! [`MemoryBroker`]: a broker inside one process, with the semantics of the real ones
//! (consumer groups, acknowledgements, retries after a delay, a visibility timeout, dead
//! letters), for tests and for running producer and worker in one process.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Acker, Broker, Consumer, Inbound, Outgoing, Subscription, binding};
use crate::envelope::Event;
use crate::error::{Error, Result};

/// A broker inside one process: every subscription (handler) gets its own copy of each
/// event of its types, messages are settled one by one, a retry comes back after its
/// delay, a message held unsettled longer than the visibility timeout goes to another
/// consumer of the group, and dead messages are kept for inspection. Event ids are
/// deduplicated for the life of the broker. Clones share the broker.
///
/// Nothing survives the process: use it in tests, or to run a producer and its workers
/// in one process with the worker's semantics.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Wakes fetches: a message was published, retried or given back.
    wake: Notify,
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    published: HashSet<String>,
    dead: Vec<DeadMessage>,
    next_seq: u64,
    closed: bool,
}

struct Group {
    types: Vec<String>,
    visibility_timeout: Duration,
    ready: VecDeque<Message>,
    delayed: Vec<(Instant, Message)>,
    held: HashMap<u64, (Instant, Message)>,
}

#[derive(Clone)]
struct Message {
    seq: u64,
    body: Arc<[u8]>,
    count: u32,
}

/// A message a [`MemoryBroker`] dead-lettered.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeadMessage {
    /// The subscription (handler) it was dead for.
    pub group: String,
    /// Why.
    pub reason: String,
    /// The message body: a CloudEvents JSON document, or what a test published raw.
    pub body: Arc<[u8]>,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes a raw body to every subscription of `event_type`, as a client that does not
    /// speak CloudEvents might.
    pub fn publish_raw(&self, event_type: &str, body: impl Into<Arc<[u8]>>) {
        let body = body.into();
        let mut state = self.lock();
        state.deliver(event_type, &body);
        drop(state);
        self.inner.wake.notify_waiters();
    }

    /// The messages dead-lettered so far.
    pub fn dead_letters(&self) -> Vec<DeadMessage> {
        self.lock().dead.clone()
    }

    /// Messages of subscription `group` not yet acknowledged (ready, held or waiting for
    /// a retry).
    pub fn pending(&self, group: &str) -> usize {
        self.lock().groups.get(group).map_or(0, |g| g.ready.len() + g.delayed.len() + g.held.len())
    }

    /// How many distinct events were published.
    pub fn published(&self) -> usize {
        self.lock().published.len()
    }
}

impl State {
    fn deliver(&mut self, event_type: &str, body: &Arc<[u8]>) {
        for group in self.groups.values_mut() {
            if group.types.iter().any(|t| t == event_type) {
                self.next_seq += 1;
                group.ready.push_back(Message { seq: self.next_seq, body: Arc::clone(body), count: 1 });
            }
        }
    }
}

impl Group {
    /// Moves retries that fell due and held messages whose visibility ended to `ready`;
    /// returns when the next of them falls due.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, m) = self.delayed.swap_remove(i);
                self.ready.push_back(m);
            } else {
                next = Some(next.map_or(self.delayed[i].0, |n| n.min(self.delayed[i].0)));
                i += 1;
            }
        }
        let expired: Vec<u64> = self.held.iter().filter(|(_, (until, _))| *until <= now).map(|(s, _)| *s).collect();
        for seq in expired {
            if let Some((_, mut m)) = self.held.remove(&seq) {
                m.count += 1;
                self.ready.push_back(m);
            }
        }
        for (until, _) in self.held.values() {
            next = Some(next.map_or(*until, |n| n.min(*until)));
        }
        next
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn name(&self) -> &str {
        "memory"
    }

    async fn publish(&self, message: &Outgoing) -> Result<()> {
        let mut state = self.lock();
        if state.closed {
            return Err(Error::backend("memory", "the broker is closed"));
        }
        if !state.published.insert(message.id().to_owned()) {
            return Ok(());
        }
        state.deliver(message.event_type(), &message.structured_shared());
        drop(state);
        self.inner.wake.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, subscription: &Subscription) -> Result<Box<dyn Consumer>> {
        let mut state = self.lock();
        let group = state.groups.entry(subscription.group.clone()).or_insert_with(|| Group {
            types: Vec::new(),
            visibility_timeout: subscription.visibility_timeout,
            ready: VecDeque::new(),
            delayed: Vec::new(),
            held: HashMap::new(),
        });
        group.types.clone_from(&subscription.event_types);
        group.visibility_timeout = subscription.visibility_timeout;
        Ok(Box::new(MemoryConsumer { broker: self.clone(), group: subscription.group.clone() }))
    }

    async fn close(&self) -> Result<()> {
        self.lock().closed = true;
        Ok(())
    }
}

struct MemoryConsumer {
    broker: MemoryBroker,
    group: String,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Inbound>> {
        let give_up = Instant::now() + wait;
        loop {
            // Registered before looking, so a publish between the look and the wait wakes it.
            let woken = self.broker.inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let now = Instant::now();
            let next = {
                let mut state = self.broker.lock();
                let Some(group) = state.groups.get_mut(&self.group) else {
                    return Err(Error::backend("memory", format!("subscription `{}` is gone", self.group)));
                };
                let next = group.promote(now);
                let until = now + group.visibility_timeout;
                let mut out = Vec::new();
                while out.len() < max {
                    let Some(m) = group.ready.pop_front() else { break };
                    let event: std::result::Result<Event, String> = binding::from_structured(&m.body);
                    let acker = MemoryAcker { broker: self.broker.clone(), group: self.group.clone(), seq: m.seq };
                    out.push(Inbound::new(event, m.count, Box::new(acker)));
                    group.held.insert(m.seq, (until, m));
                }
                if !out.is_empty() {
                    return Ok(out);
                }
                next
            };
            if now >= give_up {
                return Ok(Vec::new());
            }
            let until = next.map_or(give_up, |n| n.min(give_up));
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

struct MemoryAcker {
    broker: MemoryBroker,
    group: String,
    seq: u64,
}

impl MemoryAcker {
    /// Takes the message back from the held ones: `None` when its visibility ended and it
    /// went to another consumer (settling it then is a no-op, as on a real broker).
    fn take(&self, state: &mut State) -> Option<Message> {
        state.groups.get_mut(&self.group).and_then(|g| g.held.remove(&self.seq)).map(|(_, m)| m)
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(self: Box<Self>) -> Result<()> {
        let mut state = self.broker.lock();
        self.take(&mut state);
        Ok(())
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<()> {
        let mut state = self.broker.lock();
        if let Some(mut m) = self.take(&mut state)
            && let Some(group) = state.groups.get_mut(&self.group)
        {
            m.count += 1;
            group.delayed.push((Instant::now() + delay, m));
        }
        drop(state);
        self.broker.inner.wake.notify_waiters();
        Ok(())
    }

    async fn dead(self: Box<Self>, reason: &str) -> Result<()> {
        let mut state = self.broker.lock();
        if let Some(m) = self.take(&mut state) {
            state.dead.push(DeadMessage { group: self.group.clone(), reason: reason.to_owned(), body: m.body });
        }
        Ok(())
    }

    async fn release(self: Box<Self>) -> Result<()> {
        let mut state = self.broker.lock();
        if let Some(mut m) = self.take(&mut state)
            && let Some(group) = state.groups.get_mut(&self.group)
        {
            m.count += 1;
            group.ready.push_front(m);
        }
        drop(state);
        self.broker.inner.wake.notify_waiters();
        Ok(())
    }
}
