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
//!    and slow-down notice included) and *deliver* ([`ReplySender::deliver`] →
//!    [`Delivery`]), in a tracked task on the caller's runtime; a `Throttled` delivery puts
//!    the group's back-off into admission state.
//!
//! Nothing here sees HTTP request types or DingTalk error codes.

pub mod admission;
pub mod redis;

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
        Pipeline {
            admission: parts.admission,
            webhooks: parts.webhooks,
            bot: parts.bot,
            sender: parts.sender,
            tasks: TaskTracker::new(),
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
        if slots.draining.load(Ordering::SeqCst) {
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
    /// HTTP worker: no wake-up of another thread per reply, and the pooled connection's
    /// I/O stays on the same thread). The slot is released when the reply is out; shutdown
    /// waits for every slot before it stops the workers.
    pub fn dispatch(self: &Arc<Self>, job: Job, slot: Slot) {
        let pipeline = self.clone();
        // Boxed, so that the task keeps a pointer rather than room for the whole job
        // (a future keeps its arguments' space while it is pending).
        let job = Box::new(job);
        let task = async move {
            pipeline.run(job).await;
            drop(slot);
        }
        .instrument(tracing::Span::current());
        self.tasks.spawn(task);
    }

    /// Respond and deliver, now.
    async fn run(&self, job: Box<Job>) -> Delivery {
        // Out of its box at once: moving out of `*job` here would keep the box allocated
        // to the end of the task (a moved-from box is freed where it goes out of scope).
        let Job {
            callback,
            webhook,
            webhook_expired,
            task,
        } = Job::unbox(job);
        // Both stages are boxed where they are made: the task then stays a few hundred
        // bytes instead of tens of kilobytes copied at every spawn. The callback goes into
        // the first box and only what delivery needs comes out (the text, names and ids
        // are freed before the reply waits for a connection).
        let (message, recipient) = Box::pin(async move {
            let message = self.bot.respond(&callback, task).await;
            (message, Recipient::from(callback))
        })
        .await;
        let target = ReplyTarget {
            webhook: &webhook,
            webhook_expired,
            kind: recipient.kind,
            open_conversation_id: &recipient.conversation_id,
            sender_staff_id: recipient.sender_staff_id.as_deref(),
            robot_code: recipient.robot_code.as_deref(),
        };
        let delivery = Box::pin(self.sender.deliver(&target, &message)).await;
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

    /// Reply tasks not finished yet.
    pub fn pending_replies(&self) -> usize {
        self.tasks.len()
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
    pub async fn maintain(&self) {
        let sizes = self.admission.maintain(crate::clock::now_ms());
        telemetry::tracked_groups(sizes.groups);
        telemetry::remembered("dedupe", sizes.dedupe);
        telemetry::remembered("replay", sizes.replay);
        telemetry::callbacks_in_flight(self.callbacks_in_flight());
        telemetry::cached_groups(self.bot.cached_groups().await);
    }

    /// Shutdown: new callbacks are refused from now on, and this completes when every
    /// admitted callback's reply is out, or at `deadline` (then returns false).
    pub async fn drain(&self, deadline: tokio::time::Instant) -> bool {
        self.slots.draining.store(true, Ordering::SeqCst);
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
