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
/// Longest burst the bucket allows, as time at the current rate.
const BURST: Duration = Duration::from_millis(1);

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

    /// Largest batch that makes sense at this rate: about one burst's worth, at least 1.
    pub fn batch_size(&self, wire: usize, max: usize) -> usize {
        ((self.capacity / wire.max(1) as f64) as usize).clamp(1, max.max(1))
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

/// Loss-driven rate control: additive increase towards the target while loss stays under
/// [`LOSS_TOLERATED`], multiplicative decrease above it — down to the rate the receiver actually
/// took, when known — never under `min_rate` unless loss is heavy ([`LOSS_HEAVY`]).
#[derive(Debug, Clone)]
pub struct RateController {
    target: u64,
    min: u64,
    current: u64,
    /// No target was given: grow in proportion to the current rate, not to the cap.
    unlimited: bool,
    /// The last report cut the rate: the next one still counts datagrams sent before the cut,
    /// so it may not cut again.
    just_cut: bool,
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
            just_cut: false,
        }
    }

    /// The rate to pace at now, bits/s.
    pub fn rate(&self) -> u64 {
        self.current
    }

    /// Feeds one receiver report (datagrams received and known lost since the previous one,
    /// and the rate, on the wire, at which the receiver took them if known); returns the new
    /// rate.
    pub fn on_status(&mut self, received: u32, lost: u32, delivered: Option<u64>) -> u64 {
        let total = u64::from(received) + u64::from(lost);
        if total < 16 {
            return self.current; // too few samples to judge
        }
        let loss = lost as f64 / total as f64;
        if loss > LOSS_TOLERATED && std::mem::take(&mut self.just_cut) {
            return self.current;
        }
        if loss > LOSS_TOLERATED {
            self.just_cut = true;
            let factor = (1.0 - loss).max(0.5);
            let floor = if loss > LOSS_HEAVY {
                FLOOR_RATE.min(self.min.max(1))
            } else {
                self.min
            };
            let mut next = (self.current as f64 * factor) as u64;
            if let Some(d) = delivered {
                // The path (or the receiver) took `d`: sending faster only loses more.
                next = next.min(d);
            }
            self.current = next.max(floor).max(FLOOR_RATE.min(self.target));
        } else {
            self.just_cut = false;
            let step = if self.unlimited {
                (self.current / 4).max(FLOOR_RATE * 10)
            } else {
                self.target / 16
            };
            self.current = (self.current + step).min(self.target);
        }
        self.current
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
        for _ in 0..40 {
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
        // Loss with a known delivered rate: straight down to it, then no second cut for the
        // report that still counts datagrams sent before the first.
        assert_eq!(c.on_status(800, 200, Some(300_000_000)), 300_000_000);
        assert_eq!(c.on_status(800, 200, Some(100_000_000)), 300_000_000);
    }

    #[test]
    fn unlimited_grows_in_proportion() {
        let mut c = RateController::new(0, 0);
        assert_eq!(c.rate(), UNLIMITED_START);
        assert_eq!(c.on_status(1000, 0, None), UNLIMITED_START * 5 / 4);
        assert_eq!(c.on_status(500, 500, Some(1_000_000_000)), 1_000_000_000);
    }

    #[test]
    fn bucket_paces() {
        let mut b = TokenBucket::new(80_000_000, 1500); // 10 MB/s, 10 KB burst
        assert_eq!(b.allowance(1000, 64), 10);
        b.consume(10_000);
        assert_eq!(b.allowance(1000, 64), 0);
        let t = b.time_until(1000);
        assert!(t <= Duration::from_micros(110), "{t:?}");
        assert_eq!(b.batch_size(1000, 64), 10);
    }
}
