//! The one path every verified callback takes, whatever door it came through.
//!
//! A door (the HTTP callback route today) turns the wire into a verified [`Callback`] and
//! then calls, in order:
//!
//! 0. [`Pipeline::check_pair`] — for doors with a signature pair, from the headers alone and
//!    before the body is read: a pair that carried all the messages it may, or one signed
//!    before an unclean restart, is refused at once;
//! 1. [`Pipeline::slot`] — one of `server.max_in_flight` slots, taken once the body is read
//!    and parsed, held until the reply is out (bounds outstanding work; waits up to
//!    `server.queue_wait_ms`);
//! 2. [`Pipeline::admit`] — *admit*: the sessionWebhook allow-list, then msgId dedupe,
//!    replay defence and the group budget in [`AdmissionState`] → a [`Decision`] or a
//!    [`Refusal`];
//! 3. [`Pipeline::dispatch`] — *respond* ([`Bot::respond`]: the finished message, mention
//!    and slow-down notice included) in a tracked task on the caller's runtime, then
//!    *deliver* ([`ReplySender::deliver`] → [`Delivery`]) by that task or, when enough
//!    tasks are delivering already, by one of them after the reply waited in the
//!    [`Outbox`]; a `Throttled` delivery puts the group's back-off into admission state.
//!
//! Nothing here sees HTTP request types or DingTalk error codes.

pub mod admission;
pub mod redis;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::Uri;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use admission::{
    AdmissionState, BackendStatus, MemoryAdmission, MemoryOptions, PairCheck, Remembered, Restored,
    STATE_FILE, SignedPair, Ticket, Verdict,
};
pub use redis::{RedisAdmission, RedisOptions};

use crate::bot::{Bot, Task};
use crate::dingtalk::outbound::Reply;
use crate::dingtalk::sender::ReplyTarget;
use crate::dingtalk::{
    Callback, ConversationKind, Delivery, ReplySender, WebhookPolicy, WebhookRefusal,
};
use crate::telemetry;

/// Why a verified callback is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The sessionWebhook is not one replies may go to.
    #[error("{0}")]
    Webhook(WebhookRefusal),
    /// The signature pair already carried as many messages as it may.
    #[error("this signature was already used for other messages")]
    Replayed,
    /// Signed before an unclean restart, whose replay record was lost.
    #[error("signed before dingbot restarted without saving its replay record; sign anew")]
    SignedBeforeRestart,
    /// No slot within the queue wait, or admission state unavailable: try again.
    #[error("too many callbacks in flight; try again")]
    Overloaded,
    /// Shutting down: the callbacks already taken are being finished.
    #[error("dingbot is shutting down; try again")]
    ShuttingDown,
}

/// What admission decided for a callback that was not refused.
// `Reply` is large (the callback itself) but is returned once and moved into the reply
// task; boxing it would only add an allocation per callback.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decision {
    /// Send a reply: the answer, or the group's slow-down notice.
    Reply(Job),
    /// A redelivery of a message already taken: nothing to send.
    Duplicate,
    /// Over budget and already told: nothing to send.
    Limited,
}

/// An admitted callback and what to send for it.
#[derive(Debug)]
pub struct Job {
    /// The callback.
    pub callback: Callback,
    /// Its checked sessionWebhook.
    pub webhook: Uri,
    /// Whether the sessionWebhook had expired at admission (admitted only when replies
    /// fall back to the robot send APIs, which then carry the reply).
    pub webhook_expired: bool,
    /// The answer or the slow-down notice.
    pub task: Task,
}

impl Job {
    /// The job, its box freed.
    fn unbox(job: Box<Job>) -> Job {
        *job
    }

    /// Whether this job sends the slow-down notice rather than an answer (doors count it
    /// without knowing the bot's types).
    pub fn is_slow_down(&self) -> bool {
        matches!(self.task, Task::SlowDown { .. })
    }
}

/// What delivery needs of a callback: taking it drops the rest (text, names, ids).
struct Recipient {
    kind: ConversationKind,
    conversation_id: String,
    sender_staff_id: Option<String>,
    robot_code: Option<String>,
}

impl From<Callback> for Recipient {
    fn from(callback: Callback) -> Recipient {
        Recipient {
            kind: callback.kind,
            conversation_id: callback.conversation_id,
            sender_staff_id: callback.sender_staff_id,
            robot_code: callback.robot_code,
        }
    }
}

/// A reply that is built and waits to be delivered: what delivery needs and nothing else.
struct Outgoing {
    reply: Reply,
    recipient: Recipient,
    webhook: Uri,
    webhook_expired: bool,
    /// The callback's span, for what delivery logs.
    span: tracing::Span,
    slot: Slot,
}

/// Replies waiting for their turn. At most `limit` tasks deliver at once (the couriers);
/// each takes the next waiting reply when its own is out, and the task of a reply built
/// while all couriers are busy leaves it here and ends. A waiting reply is then an
/// [`Outgoing`] of a few hundred bytes instead of a parked task and its futures (2.4 KB
/// each, measured: bench/README.md › Memory under load); up to `server.max_in_flight`
/// replies wait when DingTalk is slower than the intake.
struct Outbox<T> {
    state: std::sync::Mutex<OutboxState<T>>,
    limit: usize,
}

struct OutboxState<T> {
    waiting: VecDeque<T>,
    couriers: usize,
}

impl<T> Outbox<T> {
    fn new(limit: usize) -> Outbox<T> {
        Outbox {
            state: std::sync::Mutex::new(OutboxState {
                waiting: VecDeque::new(),
                couriers: 0,
            }),
            limit: limit.max(1),
        }
    }

    /// The poisoned case cannot leave the queue inconsistent: every critical section is a
    /// push, a pop or a counter step.
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState<T>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A courier for `outgoing` if fewer than `limit` are out; else it waits its turn.
    fn enter(&self, outgoing: T) -> Option<(Courier<'_, T>, T)> {
        let mut state = self.lock();
        if state.couriers < self.limit {
            state.couriers += 1;
            Some((
                Courier {
                    outbox: self,
                    done: false,
                },
                outgoing,
            ))
        } else {
            state.waiting.push_back(outgoing);
            None
        }
    }

    fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// How many tasks are delivering.
    fn couriers(&self) -> usize {
        self.lock().couriers
    }

    /// Whether replies wait while a courier's place is free (see `Pipeline::rescue`).
    fn stranded(&self) -> bool {
        let state = self.lock();
        state.couriers < self.limit && !state.waiting.is_empty()
    }

    /// A courier for the oldest waiting reply, if [`Outbox::stranded`].
    fn rescue(&self) -> Option<(Courier<'_, T>, T)> {
        let mut state = self.lock();
        if state.couriers >= self.limit {
            return None;
        }
        let first = state.waiting.pop_front()?;
        state.couriers += 1;
        Some((
            Courier {
                outbox: self,
                done: false,
            },
            first,
        ))
    }
}

/// One delivering task's place among the couriers, given back when nothing waits (or when
/// the task ends otherwise: the next reply built then finds a place free).
struct Courier<'a, T> {
    outbox: &'a Outbox<T>,
    done: bool,
}

impl<T> Courier<'_, T> {
    /// The oldest waiting reply, or `None` after giving the place back. Both under one
    /// lock: a reply is never left waiting while its would-be courier leaves.
    fn next(&mut self) -> Option<T> {
        let mut state = self.outbox.lock();
        let next = state.waiting.pop_front();
        if next.is_none() && !self.done {
            state.couriers -= 1;
            self.done = true;
        }
        next
    }
}

impl<T> Drop for Courier<'_, T> {
    fn drop(&mut self) {
        if !self.done {
            self.outbox.lock().couriers -= 1;
        }
    }
}

/// An in-flight slot: held from admission until the reply is out.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// Sizes of the in-flight slots.
#[derive(Debug)]
struct Slots {
    /// Free slots.
    free: Arc<Semaphore>,
    /// All slots (`server.max_in_flight`).
    total: u32,
    /// `server.queue_wait_ms`.
    queue_wait: Duration,
    /// Set once shutdown begins.
    draining: AtomicBool,
}

/// The pipeline's parts, built once at start-up.
pub struct Parts {
    /// Where admission state lives.
    pub admission: Arc<dyn AdmissionState>,
    /// Where replies may go.
    pub webhooks: WebhookPolicy,
    /// Builds the messages.
    pub bot: Arc<Bot>,
    /// Delivers them.
    pub sender: Arc<ReplySender>,
    /// `server.max_in_flight`.
    pub max_in_flight: usize,
    /// `server.queue_wait_ms`.
    pub queue_wait: Duration,
}

/// The transport-neutral callback path.
pub struct Pipeline {
    admission: Arc<dyn AdmissionState>,
    webhooks: WebhookPolicy,
    bot: Arc<Bot>,
    sender: Arc<ReplySender>,
    /// Reply tasks; shutdown waits for them.
    tasks: TaskTracker,
    /// Replies waiting for a courier.
    outbox: Outbox<Outgoing>,
    slots: Slots,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline of `parts`.
    pub fn new(parts: Parts) -> Pipeline {
        // Twice the sender's parallel requests: a courier backing off before a retry gives
        // up its connection turn, which another courier then takes.
        let couriers = 2 * parts.sender.parallel();
        Pipeline {
            admission: parts.admission,
            webhooks: parts.webhooks,
            bot: parts.bot,
            sender: parts.sender,
            tasks: TaskTracker::new(),
            outbox: Outbox::new(couriers),
            slots: Slots {
                free: Arc::new(Semaphore::new(parts.max_in_flight)),
                total: u32::try_from(parts.max_in_flight).unwrap_or(u32::MAX),
                queue_wait: parts.queue_wait,
                draining: AtomicBool::new(false),
            },
        }
    }

    /// From the headers alone, before the body is read: may `pair` carry a (further)
    /// message? Nothing is recorded.
    pub async fn check_pair(&self, pair: SignedPair<'_>, now_ms: i64) -> Result<(), Refusal> {
        match self.admission.check_pair(pair, now_ms).await {
            PairCheck::Open => Ok(()),
            PairCheck::Spent => Err(Refusal::Replayed),
            PairCheck::SignedBeforeRestart => Err(Refusal::SignedBeforeRestart),
        }
    }

    /// An in-flight slot: at once when one is free, else after waiting up to
    /// `server.queue_wait_ms` (first come, first served); refused while shutting down.
    pub async fn slot(&self) -> Result<Slot, Refusal> {
        self.take_slot(true).await
    }

    /// A slot for a message the door has already taken from DingTalk (the Stream door acks
    /// a frame before admitting it, and DingTalk does not send a robot message again):
    /// as [`Pipeline::slot`], but not refused while shutdown waits for the door to finish
    /// ([`Pipeline::refuse_new`]), only once the drain has closed the slots.
    pub async fn slot_for_taken(&self) -> Result<Slot, Refusal> {
        self.take_slot(false).await
    }

    /// Shutdown's first step: callbacks not yet admitted are refused (`ShuttingDown`) from
    /// now on, except those [`Pipeline::slot_for_taken`] is for.
    pub fn refuse_new(&self) {
        self.slots.draining.store(true, Ordering::SeqCst);
    }

    async fn take_slot(&self, refuse_while_draining: bool) -> Result<Slot, Refusal> {
        let slots = &self.slots;
        let permit = match slots.free.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(Refusal::ShuttingDown),
            Err(TryAcquireError::NoPermits) if slots.queue_wait.is_zero() => {
                return Err(Refusal::Overloaded);
            }
            Err(TryAcquireError::NoPermits) => {
                let wait = slots.free.clone().acquire_owned();
                match tokio::time::timeout(slots.queue_wait, wait).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => return Err(Refusal::ShuttingDown),
                    Err(_elapsed) => return Err(Refusal::Overloaded),
                }
            }
        };
        if refuse_while_draining && slots.draining.load(Ordering::SeqCst) {
            return Err(Refusal::ShuttingDown);
        }
        Ok(Slot(permit))
    }

    /// Stage 1, *admit*: where the reply would go, then replay defence, dedupe and budget.
    /// A refused callback leaves nothing recorded. `signature` is the door's verified pair
    /// (None for doors without one).
    pub async fn admit(
        &self,
        callback: Callback,
        signature: Option<SignedPair<'_>>,
        now_ms: i64,
    ) -> Result<Decision, Refusal> {
        // An expired sessionWebhook is still answered when the robot send APIs can carry
        // the reply; its origin and path must pass all the same.
        let (webhook, webhook_expired) = match self.webhooks.check(
            &callback.session_webhook,
            callback.session_webhook_expired_time,
            now_ms,
        ) {
            Ok(webhook) => (webhook, false),
            Err(WebhookRefusal::Expired) if self.sender.falls_back() => {
                let webhook = self
                    .webhooks
                    .check(&callback.session_webhook, None, now_ms)
                    .map_err(Refusal::Webhook)?;
                tracing::info!("sessionWebhook expired; the reply goes through the robot send API");
                (webhook, true)
            }
            Err(refusal) => return Err(Refusal::Webhook(refusal)),
        };
        let ticket = Ticket {
            msg_id: &callback.msg_id,
            group: &callback.conversation_id,
            signature,
        };
        let task = match self.admission.admit(&ticket, now_ms).await {
            Verdict::Answer => Task::Answer,
            Verdict::SlowDown { retry_after_secs } => {
                tracing::info!(retry_after_secs, "group over its budget; notice sent");
                Task::SlowDown { retry_after_secs }
            }
            Verdict::Limited => {
                tracing::info!("group over its budget");
                return Ok(Decision::Limited);
            }
            Verdict::Duplicate => {
                tracing::debug!("duplicate msgId; already handled");
                return Ok(Decision::Duplicate);
            }
            Verdict::Replayed => return Err(Refusal::Replayed),
            Verdict::SignedBeforeRestart => return Err(Refusal::SignedBeforeRestart),
            Verdict::Full => return Err(Refusal::Overloaded),
        };
        Ok(Decision::Reply(Job {
            callback,
            webhook,
            webhook_expired,
            task,
        }))
    }

    /// Stages 2 and 3, *respond* and *deliver*, in a task on the caller's runtime (an
    /// HTTP worker: no wake-up of another thread per reply). Once the message is built the
    /// task either delivers it, and then the replies waiting in the [`Outbox`], or leaves
    /// it there for a task that does. The slot goes with the reply and is released when it
    /// is out; shutdown waits for every slot before it stops the workers.
    pub fn dispatch(self: &Arc<Self>, job: Job, slot: Slot) {
        let pipeline = self.clone();
        // Boxed, so that the task keeps a pointer rather than room for the whole job
        // (a future keeps its arguments' space while it is pending).
        let job = Box::new(job);
        let span = tracing::Span::current();
        self.tasks
            .spawn(async move { pipeline.run(job, slot, span).await });
    }

    /// Respond, then deliver as a courier or leave the reply to one.
    async fn run(&self, job: Box<Job>, slot: Slot, span: tracing::Span) {
        // Out of its box at once: moving out of `*job` here would keep the box allocated
        // to the end of the task (a moved-from box is freed where it goes out of scope).
        let Job {
            callback,
            webhook,
            webhook_expired,
            task,
        } = Job::unbox(job);
        // Boxed where it is made: the task then stays a few hundred bytes instead of tens
        // of kilobytes copied at every spawn. The callback goes into the box and only what
        // delivery needs comes out (the text, names and ids are freed before the reply
        // waits for a connection).
        let (reply, recipient) = Box::pin(async move {
            let reply = self.bot.respond(&callback, task).await;
            (reply, Recipient::from(callback))
        })
        .instrument(span.clone())
        .await;
        let outgoing = Outgoing {
            reply,
            recipient,
            webhook,
            webhook_expired,
            span,
            slot,
        };
        let Some((courier, first)) = self.outbox.enter(outgoing) else {
            return;
        };
        // Boxed: a task that only responds (most of them while DingTalk is slow, and all
        // of a cold start's lookups) then keeps no room for the delivery loop.
        Box::pin(self.carry(courier, first)).await;
    }

    /// A courier's round: `first`, then the oldest waiting reply until none waits.
    async fn carry(&self, mut courier: Courier<'_, Outgoing>, first: Outgoing) {
        let mut next = Some(first);
        while let Some(outgoing) = next {
            let span = outgoing.span.clone();
            self.deliver(outgoing).instrument(span).await;
            next = courier.next();
        }
    }

    /// Starts a courier on this runtime if replies wait while a courier's place is free:
    /// left behind by couriers whose tasks ended without handing on (a panic, or the
    /// runtime of an HTTP worker that stopped). Called by `maintain` and `drain`.
    fn rescue(self: &Arc<Self>) {
        if !self.outbox.stranded() {
            return;
        }
        tracing::warn!(
            waiting = self.outbox.waiting(),
            "replies were left waiting without a courier; delivering them now"
        );
        let pipeline = self.clone();
        self.tasks.spawn(async move {
            if let Some((courier, first)) = pipeline.outbox.rescue() {
                pipeline.carry(courier, first).await;
            }
        });
    }

    /// Delivers one reply and records the outcome; its slot is released at the end.
    async fn deliver(&self, outgoing: Outgoing) -> Delivery {
        let Outgoing {
            reply,
            recipient,
            webhook,
            webhook_expired,
            slot,
            ..
        } = outgoing;
        let target = ReplyTarget {
            webhook: &webhook,
            webhook_expired,
            kind: recipient.kind,
            open_conversation_id: &recipient.conversation_id,
            sender_staff_id: recipient.sender_staff_id.as_deref(),
            robot_code: recipient.robot_code.as_deref(),
        };
        let delivery = self.sender.deliver(&target, &reply).await;
        match &delivery {
            Delivery::Sent => {
                telemetry::reply("sent");
                tracing::debug!("reply sent");
            }
            Delivery::Throttled { silence } => {
                telemetry::reply("throttled");
                self.admission
                    .throttle(&recipient.conversation_id, *silence)
                    .await;
                tracing::warn!(
                    silence_secs = silence.as_secs(),
                    "DingTalk throttled this group's replies (send too fast); keeping it silent"
                );
            }
            Delivery::Failed(e) => {
                telemetry::reply("failed");
                tracing::warn!(error = %e, "reply could not be delivered");
            }
        }
        drop(slot);
        delivery
    }

    /// Whether `msg_id` was admitted within the dedupe window.
    pub fn handled(&self, msg_id: &str) -> bool {
        self.admission.handled(msg_id, crate::clock::now_ms())
    }

    /// Callbacks holding a slot: admitted, reply not yet out.
    pub fn callbacks_in_flight(&self) -> usize {
        (self.slots.total as usize).saturating_sub(self.slots.free.available_permits())
    }

    /// Free slots.
    pub fn free_slots(&self) -> usize {
        self.slots.free.available_permits()
    }

    /// Replies built and waiting in the outbox for a courier, and the tasks delivering.
    pub fn outbox_counts(&self) -> (usize, usize) {
        (self.outbox.waiting(), self.outbox.couriers())
    }

    /// Replies not out yet: tasks still responding or delivering, and replies waiting in
    /// the outbox.
    pub fn pending_replies(&self) -> usize {
        self.tasks.len() + self.outbox.waiting()
    }

    /// What admission remembers now.
    pub fn remembered(&self) -> Remembered {
        self.admission.remembered()
    }

    /// The admission backend and whether its shared state is in use (`/readyz`).
    pub fn backend_status(&self) -> BackendStatus {
        self.admission.status()
    }

    /// The reply sender (its client name is reported by `check` and tests).
    pub fn sender(&self) -> &ReplySender {
        &self.sender
    }

    /// The bot.
    pub fn bot(&self) -> &Bot {
        &self.bot
    }

    /// Periodic upkeep of admission state and the gauges that follow it.
    pub async fn maintain(self: &Arc<Self>) {
        self.rescue();
        let sizes = self.admission.maintain(crate::clock::now_ms());
        telemetry::tracked_groups(sizes.groups);
        telemetry::remembered("dedupe", sizes.dedupe);
        telemetry::remembered("replay", sizes.replay);
        telemetry::callbacks_in_flight(self.callbacks_in_flight());
        telemetry::cached_groups(self.bot.cached_groups().await);
    }

    /// Shutdown: new callbacks are refused from now on, and this completes when every
    /// admitted callback's reply is out, or at `deadline` (then returns false).
    pub async fn drain(self: &Arc<Self>, deadline: tokio::time::Instant) -> bool {
        self.slots.draining.store(true, Ordering::SeqCst);
        self.rescue();
        // Every admitted callback holds a slot until its reply is out: owning all of them
        // means nothing is left to finish.
        let all = self.slots.free.acquire_many(self.slots.total);
        let drained = match tokio::time::timeout_at(deadline, all).await {
            Ok(Ok(permits)) => {
                permits.forget();
                true
            }
            Ok(Err(_closed)) => true,
            Err(_) => false,
        };
        // Waiters for a slot are refused at once from here on.
        self.slots.free.close();
        drained
    }

    /// Keeps admission state for the next start (after the last admission).
    pub async fn persist(&self) {
        match self.admission.persist().await {
            Ok(()) => tracing::info!("replay and dedupe records saved"),
            Err(e) => tracing::error!(
                error = %e,
                "replay and dedupe records not saved: the next start treats this as an unclean stop"
            ),
        }
    }

    /// Stops accepting reply tasks (after the drain).
    pub fn close(&self) {
        self.tasks.close();
    }
}

#[cfg(test)]
mod tests {
    use super::Outbox;

    #[test]
    fn outbox_has_at_most_limit_couriers_and_hands_on_in_order() {
        let outbox = Outbox::new(2);
        let (mut a, first) = outbox.enter(1).unwrap();
        assert_eq!(first, 1);
        let (mut b, second) = outbox.enter(2).unwrap();
        assert_eq!(second, 2);
        // Both couriers busy: the next replies wait, oldest first.
        assert!(outbox.enter(3).is_none());
        assert!(outbox.enter(4).is_none());
        assert_eq!(outbox.waiting(), 2);
        assert_eq!(b.next(), Some(3));
        assert_eq!(a.next(), Some(4));
        assert_eq!(outbox.waiting(), 0);
        // Nothing waits: `a` leaves, and its place is free for the next reply.
        assert_eq!(a.next(), None);
        let (_c, fifth) = outbox.enter(5).unwrap();
        assert_eq!(fifth, 5);
        assert!(outbox.enter(6).is_none());
        drop(b);
        // A courier that ended without asking (a panic, say) also gives its place back.
        let (mut d, seventh) = outbox.enter(7).unwrap();
        assert_eq!(seventh, 7);
        assert_eq!(d.next(), Some(6));
        assert_eq!(d.next(), None);
        drop(d);
        assert_eq!(outbox.lock().couriers, 1);
    }

    #[test]
    fn replies_left_by_a_dropped_courier_can_be_rescued() {
        let outbox = Outbox::new(1);
        let (courier, _) = outbox.enter(1).unwrap();
        assert!(outbox.enter(2).is_none());
        assert!(!outbox.stranded(), "a courier is out");
        assert!(outbox.rescue().is_none());
        drop(courier);
        assert!(outbox.stranded());
        let (mut rescuer, first) = outbox.rescue().unwrap();
        assert_eq!(first, 2);
        assert!(!outbox.stranded());
        assert_eq!(rescuer.next(), None);
        assert_eq!(outbox.couriers(), 0);
    }
}
