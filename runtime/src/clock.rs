//! Event ids and event times: strictly increasing UUIDv7 ids made without a lock, and
//! the current time read from the system clock at most once a millisecond per thread.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use uuid::Uuid;

/// Bits of a [`next_stamp`] below its millisecond: the per-millisecond counter of UUIDv7
/// "method 1" (RFC 9562 §6.2), 12 of them in `rand_a` and 10 at the top of `rand_b`.
const COUNTER_BITS: u32 = 22;

/// The last id stamp given in this process: Unix milliseconds above [`COUNTER_BITS`], the
/// counter below. One atomic, so making an id takes no lock. 42 bits of milliseconds last
/// until the year 2109.
static LAST_STAMP: AtomicU64 = AtomicU64::new(0);

/// The next id stamp at or after `millis`: strictly above every stamp given before in this
/// process, on every thread. A new millisecond starts its counter at a random value below
/// half its range (unguessable, room to count); within one millisecond, or when the clock
/// steps back, the counter goes on, and when it overflows it carries into the millisecond,
/// which runs ahead of the clock until the clock catches up. `seed` supplies the random start;
/// `stamps` is [`LAST_STAMP`] but for tests.
fn next_stamp(stamps: &AtomicU64, millis: u64, seed: impl Fn() -> u64) -> u64 {
    let floor = millis << COUNTER_BITS;
    let mut last = stamps.load(Ordering::Relaxed);
    loop {
        let next = if floor > last { floor | (seed() & ((1 << (COUNTER_BITS - 1)) - 1)) } else { last + 1 };
        match stamps.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(now) => last = now,
        }
    }
}

/// The UUIDv7 of a stamp: its millisecond, its counter, then 52 random bits, in the layout
/// of RFC 9562 §5.7, built as two 64-bit words rather than byte by byte.
fn uuid_of_stamp(stamp: u64, random: u64) -> Uuid {
    let counter = stamp & ((1 << COUNTER_BITS) - 1);
    // unix_ts_ms (48 bits), ver (0b0111), rand_a (12 bits): the counter's high 12 bits.
    let high = ((stamp >> COUNTER_BITS) << 16) | (0x7 << 12) | (counter >> 10);
    // var (0b10), rand_b (62 bits): the counter's low 10 bits, then 52 random ones.
    let low = (0b10 << 62) | ((counter & 0x3ff) << 52) | (random & ((1 << 52) - 1));
    Uuid::from_u64_pair(high, low)
}

/// A fresh time-ordered event id (UUIDv7). Ids made in this process increase strictly, on
/// every thread, even within one millisecond or when the system clock steps back.
pub fn new_event_id() -> Uuid {
    id_and_time().0
}

thread_local! {
    /// The last day (since the Unix epoch) this thread turned into a date: the calendar
    /// arithmetic is then done once a day, not once an event.
    static DAY: Cell<(u64, NaiveDate)> = const { Cell::new((u64::MAX, NaiveDate::MIN)) };
}

/// The UTC time `secs` seconds and `nanos` nanoseconds after the Unix epoch.
fn utc_at(secs: u64, nanos: u32) -> DateTime<Utc> {
    let (day, second) = (secs / 86_400, (secs % 86_400) as u32);
    let date = DAY.with(|cached| match cached.get() {
        (d, date) if d == day => Some(date),
        _ => {
            let date = DateTime::from_timestamp(i64::try_from(day * 86_400).ok()?, 0)?.date_naive();
            cached.set((day, date));
            Some(date)
        }
    });
    date.zip(NaiveTime::from_num_seconds_from_midnight_opt(second, nanos))
        .map(|(date, time)| date.and_time(time).and_utc())
        .unwrap_or_default()
}

/// A fresh id and the current time (microseconds, what every store keeps), from one
/// reading of the clock.
pub(crate) fn id_and_time() -> (Uuid, DateTime<Utc>) {
    let now = unix_nanos();
    let (seconds, nanos) = (now / 1_000_000_000, (now % 1_000_000_000) as u32 / 1000 * 1000);
    let stamp = next_stamp(&LAST_STAMP, now / 1_000_000, rand::random::<u64>);
    (uuid_of_stamp(stamp, rand::random()), utc_at(seconds, nanos))
}

/// How long a thread counts time on from its last reading of the system clock before it
/// reads it again. The CPU's counter drifts from the system clock by some parts per
/// million, nanoseconds over this span, far below the microsecond an event's time keeps;
/// a step of the system clock (NTP, an operator) shows in event times within this span.
const RESYNC_NANOS: u64 = 1_000_000;

/// The CPU's time-stamp counter, calibrated once per process (under a millisecond; the bus
/// builder does it, so no emit waits for it). Where the CPU has no invariant counter, it
/// reads the monotonic clock instead.
static COUNTER: OnceLock<quanta::Clock> = OnceLock::new();

thread_local! {
    /// This thread's last reading of the system clock: the counter then, and Unix
    /// nanoseconds. `(0, 0)` until the first reading.
    static ANCHOR: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Calibrates the counter behind event times now, so that no later event waits for it.
pub(crate) fn warm_clock() {
    COUNTER.get_or_init(quanta::Clock::new);
}

/// The current time in nanoseconds since the Unix epoch: the system clock, read at most
/// once per [`RESYNC_NANOS`] on each thread and counted on from there with the CPU's
/// counter, which is cheaper to read than `SystemTime::now` (see `benches/README.md`).
fn unix_nanos() -> u64 {
    let counter = COUNTER.get_or_init(quanta::Clock::new);
    ANCHOR.with(|anchor| counted_on(counter, anchor, system_unix_nanos))
}

/// The system clock in nanoseconds since the Unix epoch (0 before it; saturating in 2554).
fn system_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// [`unix_nanos`] over a given counter, anchor and system clock (tests use a mock counter):
/// the anchor's time plus the counter's advance since, or a fresh reading of `system` when
/// the anchor is unset, older than [`RESYNC_NANOS`], or ahead of the counter (which then
/// went back: another CPU's counter, or a mock).
fn counted_on(counter: &quanta::Clock, anchor: &Cell<(u64, u64)>, system: impl FnOnce() -> u64) -> u64 {
    let raw = counter.raw();
    let (at, unix) = anchor.get();
    if unix != 0 && raw >= at {
        let elapsed = counter.delta_as_nanos(at, raw);
        if elapsed < RESYNC_NANOS {
            return unix + elapsed;
        }
    }
    let unix = system();
    anchor.set((raw, unix));
    unix
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_strictly_across_clock_steps_and_counter_overflow() {
        let stamps = AtomicU64::new(0);
        let max_seed = || u64::MAX;
        let first = next_stamp(&stamps, 1_000, max_seed);
        assert_eq!(first >> COUNTER_BITS, 1_000);
        assert_eq!(first & ((1 << COUNTER_BITS) - 1), (1 << (COUNTER_BITS - 1)) - 1, "seeded below half the range");
        // Same millisecond, then a clock step back: the counter goes on.
        assert_eq!(next_stamp(&stamps, 1_000, max_seed), first + 1);
        assert_eq!(next_stamp(&stamps, 990, max_seed), first + 2);
        // The counter overflows: it carries into the millisecond, which runs ahead.
        stamps.store((1_000 << COUNTER_BITS) | ((1 << COUNTER_BITS) - 1), Ordering::Relaxed);
        let carried = next_stamp(&stamps, 1_000, max_seed);
        assert_eq!((carried >> COUNTER_BITS, carried & ((1 << COUNTER_BITS) - 1)), (1_001, 0));
        assert_eq!(next_stamp(&stamps, 1_001, max_seed), carried + 1, "the clock has not caught up yet");
        // A later millisecond reseeds.
        let later = next_stamp(&stamps, 1_002, || 5);
        assert_eq!((later >> COUNTER_BITS, later & ((1 << COUNTER_BITS) - 1)), (1_002, 5));
    }

    #[test]
    fn a_stamp_maps_to_a_v7_uuid_keeping_its_millisecond_and_order() {
        let stamp = (1_700_000_000_123 << COUNTER_BITS) | 0x2a_5a5a;
        let id = uuid_of_stamp(stamp, u64::MAX);
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().expect("v7").to_unix();
        assert_eq!((secs, nanos), (1_700_000_000, 123_000_000));
        // The counter sits right after the version and variant bits, above the random ones.
        let bits = id.as_u128();
        assert_eq!(((bits >> 64) & 0xfff) as u64, 0x2a_5a5a >> 10);
        assert_eq!(((bits >> 52) & 0x3ff) as u64, 0x2a_5a5a & 0x3ff);
        // Random bits never outweigh the counter: the next stamp sorts above whatever they are.
        assert!(uuid_of_stamp(stamp, u64::MAX) < uuid_of_stamp(stamp + 1, 0));
    }

    #[test]
    fn the_clock_counts_on_from_the_system_clock_and_rereads_it_every_millisecond() {
        let (counter, mock) = quanta::Clock::mock();
        let anchor = Cell::new((0, 0));
        let reads = Cell::new(0);
        let system = |at: u64| {
            let reads = &reads;
            move || {
                reads.set(reads.get() + 1);
                at
            }
        };
        mock.increment(5_000);
        assert_eq!(counted_on(&counter, &anchor, system(1_000_000_000)), 1_000_000_000, "first reading");
        mock.increment(RESYNC_NANOS - 1);
        assert_eq!(counted_on(&counter, &anchor, system(7)), 1_000_000_000 + RESYNC_NANOS - 1, "counted on");
        assert_eq!(reads.get(), 1, "no second reading within the span");
        mock.increment(1);
        assert_eq!(counted_on(&counter, &anchor, system(2_000_000_000)), 2_000_000_000, "the span is over");
        mock.increment(10);
        assert_eq!(counted_on(&counter, &anchor, system(7)), 2_000_000_010);
        mock.decrement(100);
        assert_eq!(counted_on(&counter, &anchor, system(3_000_000_000)), 3_000_000_000, "the counter went back");
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn event_times_follow_the_system_clock_on_every_thread() {
        let check = || {
            for round in 0..3 {
                // Anchor this thread's clock, then let the counter run a third of a span (the
                // reading below is then timed by counting on, unless the thread was preempted
                // past the span, which makes it read the clock: right either way).
                id_and_time();
                let spin = std::time::Instant::now();
                while spin.elapsed() < std::time::Duration::from_nanos(RESYNC_NANOS / 3) {
                    std::hint::spin_loop();
                }
                let before = DateTime::<Utc>::from(std::time::SystemTime::now());
                let (id, timestamp) = id_and_time();
                let after = DateTime::<Utc>::from(std::time::SystemTime::now());
                // Microseconds are kept, so `before` may be up to 1 µs later than the event;
                // the counter's drift over a span is nanoseconds once calibrated, but its
                // calibration (a sub-millisecond measurement at start-up) can be off by a
                // fraction of a percent on a loaded machine: tens of µs over a third of a span.
                let slack = chrono::Duration::microseconds(50);
                assert!(timestamp + slack >= before && timestamp <= after + slack, "round {round}");
                let id_millis = id.get_timestamp().expect("v7").to_unix();
                let id_millis = id_millis.0 * 1000 + u64::from(id_millis.1 / 1_000_000);
                // The id's millisecond is the time's, or later when another thread of the test
                // binary made an id in between with a later reading (ids increase strictly).
                let ahead = id_millis as i64 - timestamp.timestamp_millis();
                assert!((0..1000).contains(&ahead), "round {round}: id {ahead} ms from its time");
                std::thread::sleep(std::time::Duration::from_nanos(RESYNC_NANOS * 3 / 2));
            }
        };
        check();
        std::thread::spawn(check).join().expect("the other thread's times follow the clock too");
    }

    #[test]
    fn the_day_cache_gives_the_times_chrono_gives() {
        for secs in [0_u64, 86_399, 86_400, 951_782_400, 1_700_000_000, 4_102_444_799] {
            for nanos in [0, 999_999_000] {
                let expected = DateTime::from_timestamp(secs as i64, nanos).expect("in range");
                assert_eq!(utc_at(secs, nanos), expected, "{secs} s {nanos} ns");
            }
        }
    }

    #[test]
    fn ids_are_time_ordered_uuid_v7() {
        let a = new_event_id();
        let b = new_event_id();
        assert_eq!(a.get_version_num(), 7);
        assert!(a < b, "v7 ids sort by creation time");
    }
}
