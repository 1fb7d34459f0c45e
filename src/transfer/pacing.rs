//! Sending pace: a token bucket at the current rate, and the loss-driven controller that sets
//! that rate between `min_rate` and `target_rate` (see "Rate control" in docs/protocol.md).

use std::time::{Duration, Instant};

/// Bytes of IPv4 + UDP headers counted for every datagram on top of what we write.
pub const IP_UDP_OVERHEAD: usize = 28;
/// Used when the caller gives no target rate (0): a cap, not a promise.
pub const UNLIMITED_RATE: u64 = 40_000_000_000;
/// Where the rate starts when the caller gives no target: a blind start at the cap would
/// overrun the receiver at once and cost a large retransmission.
pub const UNLIMITED_START: u64 = 2_000_000_000;
/// The lowest rate the controller ever goes to, even under heavy loss.
pub const FLOOR_RATE: u64 = 1_000_000;
/// Loss fraction the controller tolerates without slowing down (random loss on a WAN path).
pub const LOSS_TOLERATED: f64 = 0.08;
/// Loss fraction above which `min_rate` no longer binds.
pub const LOSS_HEAVY: f64 = 0.30;
/// Longest burst the bucket allows, as time at the current rate: a sending thread that wakes
/// up late (a loaded machine oversleeps by a millisecond or more) catches up to this much,
/// so the average rate holds.
const BURST: Duration = Duration::from_millis(4);
/// Most sent per turn of the sending loop, as time at the current rate (a late turn is
/// caught up in several such batches, back to back).
const BATCH: Duration = Duration::from_millis(1);

/// A token bucket measured in bytes on the wire.
#[derive(Debug)]
pub struct TokenBucket {
    rate_bytes: f64,
    tokens: f64,
    capacity: f64,
    min_capacity: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket refilling at `rate` bits/s that always holds at least one `min_burst`-byte
    /// datagram; starts full.
    pub fn new(rate: u64, min_burst: usize) -> TokenBucket {
        let mut b = TokenBucket {
            rate_bytes: 0.0,
            tokens: 0.0,
            capacity: 0.0,
            min_capacity: min_burst as f64,
            last: Instant::now(),
        };
        b.set_rate(rate);
        b.tokens = b.capacity;
        b
    }

    /// Changes the rate (bits/s), keeping the tokens already earned.
    pub fn set_rate(&mut self, rate: u64) {
        self.refill();
        self.rate_bytes = rate.max(1) as f64 / 8.0;
        self.capacity = (self.rate_bytes * BURST.as_secs_f64()).max(self.min_capacity);
        self.tokens = self.tokens.min(self.capacity);
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate_bytes).min(self.capacity);
    }

    /// How many datagrams of `wire` bytes may go now (at most `max`).
    pub fn allowance(&mut self, wire: usize, max: usize) -> usize {
        self.refill();
        let n = (self.tokens / wire.max(1) as f64) as usize;
        n.min(max)
    }

    /// Largest batch that makes sense at this rate: about 1 ms worth, at least 1.
    pub fn batch_size(&self, wire: usize, max: usize) -> usize {
        let batch = (self.rate_bytes * BATCH.as_secs_f64()).max(self.min_capacity);
        ((batch / wire.max(1) as f64) as usize).clamp(1, max.max(1))
    }

    /// Takes `bytes` out of the bucket.
    pub fn consume(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    /// How long until `bytes` are available.
    pub fn time_until(&mut self, bytes: usize) -> Duration {
        self.refill();
        let missing = bytes as f64 - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.rate_bytes)
        }
    }
}

/// Queueing delay (beyond the path's own) at which the sender is taken to be over the
/// bottleneck: the queue in front of it (a shaper, a router, the receiver's socket buffer) grows.
pub const QUEUE_HIGH: Duration = Duration::from_millis(6);
/// Weight of the newest report in the smoothed loss fraction.
const LOSS_SMOOTHING: f64 = 0.25;
/// Reports that may not cut again after a cut (they still count what was sent before it).
const HOLD_AFTER_CUT: u32 = 3;
/// A cut goes to this fraction of the delivered rate, so the queue built up drains...
const DRAIN: f64 = 0.95;
/// ...less the queueing delay beyond [`QUEUE_HIGH`] over this time: a long queue drains in
/// about this long.
const DRAIN_TIME: Duration = Duration::from_millis(100);
/// Delivered-rate samples the ceiling is the maximum of (20 ms apart: about 160 ms).
const DELIVERED_SAMPLES: usize = 8;
/// Delivered-rate samples averaged when the queue is long and growing.
const RECENT_SAMPLES: usize = 3;
/// Reports without a congestion signal after which the ceiling learnt at the last one is
/// forgotten (about 2 s), so the rate may grow fast again.
const CEILING_MEMORY: u32 = 100;

/// What one receiver report tells the controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Feedback {
    /// Data datagrams received since the previous report.
    pub received: u32,
    /// Data datagrams known lost since the previous report.
    pub lost: u32,
    /// The rate, on the wire, at which the receiver took data since the previous report
    /// (bits/s), when known.
    pub delivered: Option<u64>,
    /// Bytes (on the wire) queued on the path beyond its minimum, when known: what was sent
    /// minus what was received or reported lost, less the lowest that difference has been.
    pub queued: Option<u64>,
}

/// Rate control between `min_rate` and `target_rate` (see "Rate control" in docs/protocol.md):
///
/// - congestion is a growing queue (more than [`QUEUE_HIGH`] of queueing delay and not
///   shrinking), loss over [`LOSS_TOLERATED`] on average over the last few reports, or loss
///   over [`LOSS_HEAVY`] in one report; then the rate goes to [`DRAIN`] × the rate the
///   receiver took (the best of the last few reports), which becomes the *ceiling*;
/// - loss under [`LOSS_TOLERATED`] with no queue growing is random loss: ignored;
/// - otherwise the rate grows: fast (target/16, or a quarter without target) up to 0.9 × the
///   ceiling, then by 0.5 % per report, probing for more, until the next congestion signal;
/// - never under `min_rate` unless loss is heavy ([`LOSS_HEAVY`]).
#[derive(Debug, Clone)]
pub struct RateController {
    target: u64,
    min: u64,
    current: u64,
    /// No target was given: grow in proportion to the current rate, not to the cap.
    unlimited: bool,
    /// Reports left during which no further cut happens.
    hold: u32,
    /// The delivered rate at the last congestion signal, and reports since.
    ceiling: Option<(u64, u32)>,
    delivered: [u64; DELIVERED_SAMPLES],
    next_sample: usize,
    last_queued: u64,
    /// Loss fraction, smoothed over a few reports: a single burst (one coalesced train of
    /// datagrams dropped at once) is not congestion.
    loss_avg: f64,
    /// Cuts so far (for traces and tests).
    pub cuts: u32,
}

impl RateController {
    /// Starts at the target rate. `target` 0 means [`UNLIMITED_RATE`], started at
    /// [`UNLIMITED_START`] (or `min`, if higher) and grown from there.
    pub fn new(target: u64, min: u64) -> RateController {
        let unlimited = target == 0;
        let target = if unlimited { UNLIMITED_RATE } else { target };
        let min = min.min(target);
        let current = if unlimited {
            UNLIMITED_START.max(min)
        } else {
            target
        };
        RateController {
            target,
            min,
            current,
            unlimited,
            hold: 0,
            ceiling: None,
            delivered: [0; DELIVERED_SAMPLES],
            next_sample: 0,
            last_queued: 0,
            loss_avg: 0.0,
            cuts: 0,
        }
    }

    /// The rate to pace at now, bits/s.
    pub fn rate(&self) -> u64 {
        self.current
    }

    /// The best delivered rate of the last few reports (0 when none is known).
    pub fn delivered_max(&self) -> u64 {
        self.delivered.iter().copied().max().unwrap_or(0)
    }

    /// The mean delivered rate of the last [`RECENT_SAMPLES`] reports that had one.
    fn delivered_recent(&self) -> u64 {
        let n = DELIVERED_SAMPLES;
        let recent: Vec<u64> = (1..=RECENT_SAMPLES)
            .map(|k| self.delivered[(self.next_sample + n - k) % n])
            .filter(|&d| d > 0)
            .collect();
        if recent.is_empty() {
            return self.delivered_max();
        }
        recent.iter().sum::<u64>() / recent.len() as u64
    }

    /// Feeds one receiver report without a queue estimate; see [`RateController::on_feedback`].
    pub fn on_status(&mut self, received: u32, lost: u32, delivered: Option<u64>) -> u64 {
        self.on_feedback(Feedback {
            received,
            lost,
            delivered,
            queued: None,
        })
    }

    /// Feeds one receiver report; returns the new rate.
    pub fn on_feedback(&mut self, fb: Feedback) -> u64 {
        if let Some(d) = fb.delivered {
            self.delivered[self.next_sample] = d;
            self.next_sample = (self.next_sample + 1) % DELIVERED_SAMPLES;
        }
        let best = self.delivered_max();
        // Queue growth: more than QUEUE_HIGH of delay at the delivered rate, and not draining.
        let queued = fb.queued.unwrap_or(0);
        let growing = queued > self.last_queued;
        self.last_queued = queued;
        let delay_rate = if best > 0 { best } else { self.current };
        let queue_delay = queued as f64 * 8.0 / delay_rate.max(1) as f64;
        let high = QUEUE_HIGH.as_secs_f64();
        let queue_high =
            fb.queued.is_some() && queue_delay > high && (growing || queue_delay > 3.0 * high);

        let total = u64::from(fb.received) + u64::from(fb.lost);
        let loss = if total >= 16 {
            fb.lost as f64 / total as f64
        } else {
            0.0
        };
        if total < 16 && !queue_high {
            return self.current; // too few samples to judge
        }
        if total >= 16 {
            self.loss_avg += (loss - self.loss_avg) * LOSS_SMOOTHING;
        }
        // Heavy loss acts at once; moderate loss only when it persists.
        let lossy = loss > LOSS_HEAVY || self.loss_avg > LOSS_TOLERATED;
        // A long queue still growing (the receiver stalls: its CPU is taken, its disk is slow)
        // is judged by the last few reports, not the best one, and may cut even right after a
        // cut.
        let severe = queue_high && growing && queue_delay > 3.0 * high;
        let basis = if severe {
            self.delivered_recent()
        } else {
            best
        };
        if lossy || queue_high {
            if self.hold > 0 && !(severe && basis < self.current) {
                self.hold -= 1;
                return self.current;
            }
            self.hold = HOLD_AFTER_CUT;
            self.cuts += 1;
            let floor = if loss > LOSS_HEAVY {
                FLOOR_RATE.min(self.min.max(1))
            } else {
                self.min
            };
            let mut next = if lossy {
                (self.current as f64 * (1.0 - loss).max(0.5)) as u64
            } else {
                self.current
            };
            if best > 0 {
                // The path (or the receiver) took `best`: sending faster only queues or loses.
                // Go under it, the more so the longer the queue is.
                let excess = if queue_high { queue_delay - high } else { 0.0 };
                let factor = (DRAIN - excess / DRAIN_TIME.as_secs_f64()).max(0.5);
                next = next.min((basis.min(self.current) as f64 * factor) as u64);
                self.ceiling = Some((best, 0));
            }
            self.current = next.max(floor).max(FLOOR_RATE.min(self.target));
            return self.current;
        }
        self.hold = self.hold.saturating_sub(1);
        if let Some((c, age)) = self.ceiling {
            self.ceiling = (age < CEILING_MEMORY).then_some((c, age + 1));
        }
        let fast = if self.unlimited {
            (self.current / 4).max(FLOOR_RATE * 10)
        } else {
            self.target / 16
        };
        let probe = (self.current / 200).max(FLOOR_RATE / 10);
        let step = match self.ceiling {
            Some((c, _)) if self.current as f64 >= c as f64 * 0.9 => probe,
            Some((c, _)) => fast
                .min(((c as f64 * 0.9) as u64).saturating_sub(self.current))
                .max(probe),
            None => fast,
        };
        self.current = (self.current + step).min(self.target);
        self.current
    }
}

/// The sender's estimate of what is queued on the path: data sent minus data the receiver
/// reported received or lost, less the lowest that has been over the last few seconds (the
/// path's own share, and any counting drift).
#[derive(Debug, Clone, Default)]
pub struct QueueEstimate {
    lost_bytes: u64,
    /// Lowest backlog in the current and the previous window.
    low: [Option<u64>; 2],
    reports: u32,
}

/// Reports per window of the [`QueueEstimate`] minimum (two windows are kept: 2–4 s).
const QUEUE_WINDOW: u32 = 100;

impl QueueEstimate {
    /// One report: `sent` file bytes sent so far (retransmissions included), the receiver's
    /// cumulative `received` file bytes, and `lost` datagrams of about `datagram` bytes each
    /// since the previous report. Returns the queued file bytes beyond the path's minimum.
    pub fn on_status(&mut self, sent: u64, received: u64, lost: u32, datagram: usize) -> u64 {
        self.lost_bytes += u64::from(lost) * datagram as u64;
        let backlog = sent
            .saturating_sub(received)
            .saturating_sub(self.lost_bytes);
        self.reports += 1;
        if self.reports >= QUEUE_WINDOW {
            self.reports = 0;
            self.low = [None, self.low[0]];
        }
        self.low[0] = Some(self.low[0].map_or(backlog, |l| l.min(backlog)));
        let base = self.low.iter().flatten().copied().min().unwrap_or(0);
        backlog - base.min(backlog)
    }
}

/// The rate at which the receiver takes data, from the cumulative byte counts of successive
/// Status reports, scaled from file bytes to bytes on the wire.
#[derive(Debug, Clone)]
pub struct DeliveryRate {
    wire_per_byte: f64,
    last: Option<(Instant, u64)>,
}

impl DeliveryRate {
    /// `wire_per_byte`: wire bytes per file byte (datagram overhead included).
    pub fn new(wire_per_byte: f64) -> DeliveryRate {
        DeliveryRate {
            wire_per_byte,
            last: None,
        }
    }

    /// Feeds a Status's `received_bytes`; returns the wire rate (bits/s) since the previous
    /// one, when the interval is long enough to mean something (at least 5 ms).
    pub fn on_status(&mut self, received_bytes: u64) -> Option<u64> {
        let now = Instant::now();
        let prev = self.last.replace((now, received_bytes));
        let (then, bytes) = prev?;
        let dt = now.duration_since(then).as_secs_f64();
        if dt < 0.005 || received_bytes < bytes {
            self.last = prev.filter(|_| received_bytes >= bytes);
            return None;
        }
        let bits = (received_bytes - bytes) as f64 * 8.0 * self.wire_per_byte;
        Some((bits / dt) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_backs_off_and_recovers() {
        let mut c = RateController::new(1_000_000_000, 100_000_000);
        assert_eq!(c.rate(), 1_000_000_000);
        // 2% random loss does not slow it down.
        assert_eq!(c.on_status(980, 20, None), 1_000_000_000);
        // 20% loss halves-ish it, repeatedly, but not below min_rate.
        for _ in 0..80 {
            c.on_status(800, 200, None);
        }
        assert_eq!(c.rate(), 100_000_000);
        // Heavy loss may go under min_rate.
        for _ in 0..40 {
            c.on_status(300, 700, None);
        }
        assert!(c.rate() < 100_000_000);
        assert!(c.rate() >= FLOOR_RATE);
        // Recovery is additive, up to the target.
        for _ in 0..40 {
            c.on_status(1000, 0, None);
        }
        assert_eq!(c.rate(), 1_000_000_000);
        // Too few samples: no change.
        assert_eq!(c.on_status(1, 10, None), 1_000_000_000);
        // Moderate loss in one report (a burst) is not enough...
        assert_eq!(c.on_status(800, 200, Some(300_000_000)), 1_000_000_000);
        // ...but persisting, with a known delivered rate, it goes just under that rate; the
        // next reports still count datagrams sent before the cut: no second cut.
        assert_eq!(c.on_status(800, 200, Some(300_000_000)), 285_000_000);
        assert_eq!(c.on_status(800, 200, Some(100_000_000)), 285_000_000);
    }

    #[test]
    fn unlimited_grows_in_proportion() {
        let mut c = RateController::new(0, 0);
        assert_eq!(c.rate(), UNLIMITED_START);
        assert_eq!(c.on_status(1000, 0, None), UNLIMITED_START * 5 / 4);
        assert_eq!(c.on_status(500, 500, Some(1_000_000_000)), 950_000_000);
    }

    /// Through a bottleneck the rate settles just under what the path delivers and stays
    /// there; random loss of a few per cent with no queue growing changes nothing.
    #[test]
    fn queue_growth_converges_under_the_bottleneck() {
        let cap = 495_000_000u64; // what the path delivers, wire bits/s
        let mut c = RateController::new(500_000_000, 0);
        let mut queued = 0f64; // bytes
        let mut low = u64::MAX;
        let mut sum = 0u64;
        for i in 0..2000 {
            let rate = c.rate();
            queued = (queued + (rate as f64 - cap as f64) / 8.0 * 0.02).max(0.0);
            let delivered = if queued > 0.0 { cap } else { rate };
            // 1 % random loss throughout.
            c.on_feedback(Feedback {
                received: 840,
                lost: 9,
                delivered: Some(delivered),
                queued: Some(queued as u64),
            });
            if i >= 500 {
                low = low.min(c.rate());
                sum += c.rate().min(cap);
            }
        }
        let mean = sum as f64 / 1500.0;
        assert!(low as f64 >= 0.9 * cap as f64, "fell to {low}");
        assert!(mean >= 0.95 * cap as f64, "mean {mean}");
        assert!(queued < 1_000_000.0, "queue {queued}");

        // Random loss alone, no queue: stays at the target.
        let mut c = RateController::new(500_000_000, 0);
        for _ in 0..200 {
            c.on_feedback(Feedback {
                received: 800,
                lost: 40,
                delivered: Some(480_000_000),
                queued: Some(10_000),
            });
        }
        assert_eq!(c.rate(), 500_000_000);
        assert_eq!(c.cuts, 0);
    }

    #[test]
    fn queue_estimate_subtracts_the_base_and_losses() {
        let mut q = QueueEstimate::default();
        assert_eq!(q.on_status(100_000, 90_000, 0, 1000), 0); // 10 000 in flight: the base
        assert_eq!(q.on_status(200_000, 170_000, 5, 1000), 15_000);
        assert_eq!(q.on_status(300_000, 285_000, 0, 1000), 0);
    }

    #[test]
    fn bucket_paces() {
        let mut b = TokenBucket::new(80_000_000, 1500); // 10 MB/s, 40 KB burst
        assert_eq!(b.allowance(1000, 64), 40);
        b.consume(40_000);
        assert_eq!(b.allowance(1000, 64), 0);
        let t = b.time_until(1000);
        assert!(t <= Duration::from_micros(110), "{t:?}");
        assert_eq!(b.batch_size(1000, 64), 10);
    }
}
