//! 5.2 `pacing`: each device's queue of commands not yet written, and when the next
//! may leave (`minIntervalMs + random(0..jitterMs)` after the last, at most
//! `maxPerMinute` in any 60 s). Plain data kept in the registry; the delivery timer
//! (`timers::delivery`) lets commands leave when they are due.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Pacing;
use crate::protocol::{frame_len, Frame};

const MINUTE: Duration = Duration::from_secs(60);

/// A device's pacing state. Costs nothing until pacing is used: empty queues do not
/// allocate.
#[derive(Default)]
pub struct DeviceQueue {
    waiting: VecDeque<Waiting>,
    /// Bytes of the commands waiting: they count against `maxQueuedBytes` too.
    bytes: usize,
    /// Earliest time of the next departure by `minIntervalMs + jitter`.
    next_allowed: Option<Instant>,
    /// Departures of the last minute, when `maxPerMinute` is set.
    recent: VecDeque<Instant>,
}

/// A command in the queue.
struct Waiting {
    request_id: u128,
    frame: Frame,
    /// The bytes ahead of it when it came, if with it they passed `maxQueuedBytes`: it
    /// waits for room as well as for its turn.
    room: Option<usize>,
}

impl DeviceQueue {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queues a command; `room` says it also waits for room (see `Waiting`).
    pub fn push(&mut self, request_id: u128, frame: Frame, room: Option<usize>) {
        self.bytes += frame_len(&frame);
        self.waiting.push_back(Waiting {
            request_id,
            frame,
            room,
        });
    }

    pub fn front_id(&self) -> Option<u128> {
        self.waiting.front().map(|w| w.request_id)
    }

    pub fn pop(&mut self) -> Option<(u128, Frame)> {
        let popped = self.waiting.pop_front()?;
        self.bytes = self.bytes.saturating_sub(frame_len(&popped.frame));
        Some((popped.request_id, popped.frame))
    }

    /// Takes a command out of the queue (its send settled before leaving); if it was
    /// there, whether it waited for room too (the bytes ahead of it then).
    pub fn remove(&mut self, request_id: u128) -> Option<Option<usize>> {
        let at = self
            .waiting
            .iter()
            .position(|w| w.request_id == request_id)?;
        let removed = self.waiting.remove(at)?;
        self.bytes = self.bytes.saturating_sub(frame_len(&removed.frame));
        Some(removed.room)
    }

    /// Everything still waiting, in order.
    pub fn drain(&mut self) -> impl Iterator<Item = (u128, Frame)> + '_ {
        self.bytes = 0;
        self.waiting.drain(..).map(|w| (w.request_id, w.frame))
    }

    /// When the next command may leave; `None` or a past instant is now.
    pub fn ready_at(&self, pacing: &Pacing) -> Option<Instant> {
        let by_minute = pacing.max_per_minute.and_then(|max| {
            let n = self.recent.len();
            (max > 0 && n >= max).then(|| self.recent[n - max] + MINUTE)
        });
        self.next_allowed.into_iter().chain(by_minute).max()
    }

    /// The earliest the command with `ahead` others in front of it can leave, by the
    /// pace alone (jitter taken as 0, so never later than it will): the next departure,
    /// then `minIntervalMs` between each two, and at most `maxPerMinute` in any 60 s.
    /// `None` when that is too far off to tell.
    pub fn earliest_departure(
        &self,
        ahead: usize,
        now: Instant,
        pacing: &Pacing,
    ) -> Option<Instant> {
        let first = self.ready_at(pacing).map_or(now, |at| at.max(now));
        let steps = u32::try_from(ahead).unwrap_or(u32::MAX);
        let by_interval = pacing.min_interval.saturating_mul(steps);
        let by_minute = match pacing.max_per_minute {
            Some(max) if max > 0 => {
                MINUTE.saturating_mul(u32::try_from(ahead / max).unwrap_or(u32::MAX))
            }
            _ => Duration::ZERO,
        };
        first.checked_add(by_interval.max(by_minute))
    }

    pub fn may_leave(&mut self, now: Instant, pacing: &Pacing) -> bool {
        self.forget_before(now);
        self.ready_at(pacing).is_none_or(|at| at <= now)
    }

    /// A command left at `now`: the next waits its interval.
    pub fn departed(&mut self, now: Instant, pacing: &Pacing) {
        let jitter_ms = pacing.jitter.as_millis() as u64;
        let jitter = Duration::from_millis(if jitter_ms == 0 {
            0
        } else {
            fastrand::u64(0..=jitter_ms)
        });
        self.next_allowed = Some(now + pacing.min_interval + jitter);
        if pacing.max_per_minute.is_some() {
            self.recent.push_back(now);
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while self.recent.front().is_some_and(|t| *t + MINUTE <= now) {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(min_ms: u64, jitter_ms: u64, max_per_minute: Option<usize>) -> Pacing {
        Pacing {
            min_interval: Duration::from_millis(min_ms),
            jitter: Duration::from_millis(jitter_ms),
            max_per_minute,
        }
    }

    #[test]
    fn an_idle_device_sends_at_once_then_waits_its_interval() {
        let p = pacing(1000, 0, None);
        let mut queue = DeviceQueue::default();
        let t0 = Instant::now();
        assert!(queue.may_leave(t0, &p));
        queue.departed(t0, &p);
        assert!(!queue.may_leave(t0 + Duration::from_millis(999), &p));
        assert!(queue.may_leave(t0 + Duration::from_millis(1000), &p));
    }

    #[test]
    fn waiting_bytes_follow_the_queue() {
        let mut queue = DeviceQueue::default();
        queue.push(1, Frame::Text("abcd".into()), None);
        queue.push(2, Frame::Text("efghij".into()), Some(6));
        // On the wire: payload plus a 2-byte header each.
        assert_eq!(queue.bytes(), 14);
        assert_eq!(queue.remove(1), Some(None));
        assert_eq!(queue.remove(1), None);
        assert_eq!(queue.bytes(), 8);
        assert_eq!(queue.pop().map(|(id, _)| id), Some(2));
        assert_eq!(queue.bytes(), 0);
        queue.push(3, Frame::Text("xy".into()), None);
        assert_eq!(queue.drain().count(), 1);
        assert_eq!(queue.bytes(), 0);
    }

    #[test]
    fn jitter_adds_up_to_its_bound() {
        let p = pacing(100, 50, None);
        let t0 = Instant::now();
        for _ in 0..200 {
            let mut queue = DeviceQueue::default();
            queue.departed(t0, &p);
            let at = queue.ready_at(&p).unwrap() - t0;
            assert!(
                at >= Duration::from_millis(100) && at <= Duration::from_millis(150),
                "{at:?}"
            );
        }
    }

    #[test]
    fn the_earliest_departure_is_a_lower_bound_of_the_real_one() {
        let t0 = Instant::now();
        for p in [
            pacing(4000, 3000, None),
            pacing(100, 0, Some(12)),
            pacing(0, 0, Some(3)),
        ] {
            let mut queue = DeviceQueue::default();
            queue.departed(t0, &p);
            let estimates: Vec<Instant> = (0..30)
                .map(|ahead| queue.earliest_departure(ahead, t0, &p).unwrap())
                .collect();
            // Let the 30 leave as the delivery timer would, checking every 10 ms.
            let mut now = t0;
            let mut left = Vec::new();
            while left.len() < estimates.len() {
                if queue.may_leave(now, &p) {
                    queue.departed(now, &p);
                    left.push(now);
                } else {
                    now += Duration::from_millis(10);
                }
            }
            for (i, (estimate, real)) in estimates.iter().zip(&left).enumerate() {
                assert!(
                    estimate <= real,
                    "{p:?} command {i}: {estimate:?} > {real:?}"
                );
            }
        }
        // Nine sends at 4 s apart, the first one gone: the last waits at least 32 s.
        let p = pacing(4000, 0, None);
        let mut queue = DeviceQueue::default();
        queue.departed(t0, &p);
        assert_eq!(
            queue.earliest_departure(7, t0, &p),
            Some(t0 + Duration::from_secs(32))
        );
        assert!(queue
            .earliest_departure(usize::MAX, t0, &p)
            .is_none_or(|at| at > t0));
    }

    #[test]
    fn at_most_max_per_minute_in_any_sixty_seconds() {
        let p = pacing(0, 0, Some(3));
        let mut queue = DeviceQueue::default();
        let t0 = Instant::now();
        let mut left = Vec::new();
        // Try every second for two and a half minutes.
        for s in 0..150u64 {
            let now = t0 + Duration::from_secs(s);
            while queue.may_leave(now, &p) {
                queue.departed(now, &p);
                left.push(s);
            }
        }
        assert_eq!(left, [0, 0, 0, 60, 60, 60, 120, 120, 120]);
        for (i, s) in left.iter().enumerate() {
            let within = left.iter().filter(|t| **t >= *s && **t < s + 60).count();
            assert!(within <= 3, "departure {i} at {s}s");
        }
    }
}
