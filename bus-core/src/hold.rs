//! Holding a delivery unacked while what it needs comes back (a publishing channel, the
//! topology, the store), instead of requeueing it at once: every requeue counts against the
//! queue's `x-delivery-limit`, so a few seconds of fast requeues would turn an outage into
//! dead letters (`delivery_limit`) of messages that did nothing wrong.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How long one delivery is held in all before it is given back to the broker (one requeue).
/// Well under RabbitMQ's default `consumer_timeout` (30 min), which would close the channel.
pub const HOLD_MAX: Duration = Duration::from_secs(300);

const FIRST_WAIT: Duration = Duration::from_millis(200);
const LONGEST_WAIT: Duration = Duration::from_secs(10);
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The waits of one held delivery: 200 ms doubling to 10 s, up to [`HOLD_MAX`] in all, ended
/// early by the process's stop signal. The consumer's prefetch bounds how many deliveries are
/// held at once, so an outage holds a queue's head back instead of spinning through it.
pub struct Hold {
    since: Instant,
    wait: Duration,
    attempts: u32,
    logged: Option<Instant>,
    shutdown: Option<watch::Receiver<bool>>,
    what: &'static str,
}

impl Hold {
    /// A hold for one delivery of `what` (`router`, `process dead letters`, …), ended by
    /// `shutdown` when given.
    pub fn new(what: &'static str, shutdown: Option<watch::Receiver<bool>>) -> Hold {
        Hold {
            since: Instant::now(),
            wait: FIRST_WAIT,
            attempts: 0,
            logged: None,
            shutdown,
            what,
        }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    fn stopping(&self) -> bool {
        self.shutdown.as_ref().is_some_and(|s| *s.borrow())
    }

    /// The attempt failed for `why`: wait before the next one and return true, or return false
    /// when the delivery should be given back to the broker now (the process stops, or it was
    /// held [`HOLD_MAX`]). Logs the first failure, then at most once a minute.
    pub async fn again(&mut self, why: &str) -> bool {
        self.attempts += 1;
        let held = self.since.elapsed();
        if self.stopping() || held >= HOLD_MAX {
            tracing::warn!(
                message = "giving the delivery back to the broker",
                component = self.what,
                held_ms = held.as_millis() as u64,
                attempts = self.attempts,
                error = why
            );
            return false;
        }
        if self.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            self.logged = Some(Instant::now());
            tracing::warn!(
                message = "cannot finish the delivery now; holding it and trying again",
                component = self.what,
                held_ms = held.as_millis() as u64,
                attempts = self.attempts,
                error = why
            );
        }
        let wait = self.wait.min(HOLD_MAX.saturating_sub(held));
        self.wait = (self.wait * 2).min(LONGEST_WAIT);
        match &mut self.shutdown {
            Some(s) => {
                let mut s = s.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = s.changed() => {}
                }
            }
            None => tokio::time::sleep(wait).await,
        }
        !self.stopping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hold_backs_off_to_ten_seconds_and_gives_the_delivery_back_after_five_minutes() {
        let mut h = Hold::new("test", None);
        let t0 = Instant::now();
        assert!(h.again("x").await);
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
        while h.again("x").await {}
        let held = t0.elapsed();
        assert!(
            held >= HOLD_MAX && held < HOLD_MAX + LONGEST_WAIT,
            "{held:?}"
        );
        // 200 ms, 400, 800, 1.6 s, 3.2, 6.4, then 10 s each: about 40 attempts, not 1,500.
        assert!(h.attempts() < 45, "{}", h.attempts());
    }

    #[tokio::test(start_paused = true)]
    async fn the_stop_signal_ends_a_hold_at_once() {
        let (tx, rx) = watch::channel(false);
        let mut h = Hold::new("test", Some(rx));
        assert!(h.again("x").await);
        let _ = tx.send(true);
        assert!(!h.again("x").await);
    }
}
