//! Latency histograms (HdrHistogram, microseconds), errors by gRPC code, and
//! the before / during / after phases of a model swap.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::target::{Outcome, code_name};

/// Highest latency recorded exactly (larger values are clamped): 10 minutes.
const MAX_US: u64 = 600_000_000;

fn histogram() -> Histogram<u64> {
    // 3 significant digits over 1 µs ..= 10 min.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Summary {
    /// The summary of `h`.
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// As JSON (`*_us` keys).
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "mean_us": (self.mean * 10.0).round() / 10.0,
            "p50_us": self.p50,
            "p90_us": self.p90,
            "p99_us": self.p99,
            "p999_us": self.p999,
            "max_us": self.max,
        })
    }

    /// `p50 … max` in a short human form.
    pub fn text(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
            fmt_us(self.p50),
            fmt_us(self.p90),
            fmt_us(self.p99),
            fmt_us(self.p999),
            fmt_us(self.max)
        )
    }
}

/// `850 µs`, `1.25 ms`, `2.0 s`.
pub fn fmt_us(v: u64) -> String {
    if v < 1_000 {
        format!("{v} µs")
    } else if v < 1_000_000 {
        format!("{:.2} ms", v as f64 / 1e3)
    } else {
        format!("{:.2} s", v as f64 / 1e6)
    }
}

/// Calls of one kind or phase: latency of successful calls, errors by code.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Latency of successful calls (µs).
    pub hist: Histogram<u64>,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls by gRPC code name (plus `CLIENT_BACKLOG`: not sent,
    /// the client's in-flight cap was reached).
    pub errors: BTreeMap<String, u64>,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            hist: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Bucket {
    /// Records one call.
    pub fn record(&mut self, latency: Duration, outcome: Outcome) {
        match outcome {
            Outcome::Ok { .. } => {
                self.ok += 1;
                let us = (latency.as_micros() as u64).clamp(1, MAX_US);
                let _ = self.hist.record(us);
            }
            Outcome::Err(c) => *self.errors.entry(code_name(c).to_string()).or_insert(0) += 1,
        }
    }

    /// Records a call the client did not send.
    pub fn record_not_sent(&mut self) {
        *self.errors.entry("CLIENT_BACKLOG".into()).or_insert(0) += 1;
    }

    /// Failed calls.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The latency summary.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.hist)
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok,
            "errors": self.errors,
            "latency": self.summary().to_json(),
        })
    }
}

/// Which phase of a swap a call belongs to, by its intended send time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the publish started.
    Before,
    /// From the publish until `settle` after the first answer by the new version.
    During,
    /// Later.
    After,
}

/// Swap bookkeeping.
#[derive(Debug, Clone, Default)]
pub struct SwapStats {
    /// When the publish started.
    pub started: Option<Instant>,
    /// When the publish returned.
    pub published: Option<Instant>,
    /// The version published.
    pub new_version: Option<u64>,
    /// First answer by the new version.
    pub seen: Option<Instant>,
    /// Why the publish failed.
    pub publish_error: Option<String>,
    /// How long "during" lasts after the new version is first seen.
    pub settle: Duration,
    /// Calls by phase.
    pub before: Bucket,
    /// Calls by phase.
    pub during: Bucket,
    /// Calls by phase.
    pub after: Bucket,
}

impl SwapStats {
    /// The phase of a call intended at `intended` (decided when it completes:
    /// a call intended after `seen + settle` always completes after `seen`
    /// is known, so the assignment is final).
    pub fn phase(&self, intended: Instant) -> Phase {
        match self.started {
            Some(s) if intended >= s => match self.seen {
                Some(seen) if intended >= seen + self.settle => Phase::After,
                _ => Phase::During,
            },
            _ => Phase::Before,
        }
    }
}

/// Everything recorded in a run.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// All calls.
    pub all: Bucket,
    /// Calls by kind (`embed`, `search`, `explain`).
    pub by_kind: BTreeMap<&'static str, Bucket>,
    /// Successful answers by model version.
    pub versions: BTreeMap<u64, u64>,
    /// The last progress interval (reset by the progress line).
    pub window: Bucket,
    /// Swap phases, when the run swaps.
    pub swap: Option<SwapStats>,
    /// Time of the last completion.
    pub last_done: Option<Instant>,
    /// The first message seen for each error code.
    pub error_examples: BTreeMap<&'static str, String>,
    /// Server-reported queue + compute time of answered calls that did work
    /// (Embed/Explain with `server_us > 0`), µs: the server's own share of
    /// the latency, next to the client-measured one.
    pub server_work: Option<Histogram<u64>>,
}

impl Stats {
    /// Records one completed call intended at `intended`.
    pub fn record(
        &mut self,
        kind: &'static str,
        intended: Instant,
        done: Instant,
        outcome: Outcome,
    ) {
        let lat = done.saturating_duration_since(intended);
        self.all.record(lat, outcome);
        self.window.record(lat, outcome);
        self.by_kind.entry(kind).or_default().record(lat, outcome);
        self.last_done = Some(self.last_done.map_or(done, |d| d.max(done)));
        if let Outcome::Ok { version, server_us } = outcome {
            *self.versions.entry(version).or_insert(0) += 1;
            if server_us > 0 {
                let _ = self
                    .server_work
                    .get_or_insert_with(histogram)
                    .record(server_us.min(MAX_US));
            }
        }
        if let Some(s) = &mut self.swap {
            if let Outcome::Ok { version, .. } = outcome
                && s.seen.is_none()
                && s.new_version == Some(version)
            {
                s.seen = Some(done);
            }
            match s.phase(intended) {
                Phase::Before => s.before.record(lat, outcome),
                Phase::During => s.during.record(lat, outcome),
                Phase::After => s.after.record(lat, outcome),
            }
        }
    }

    /// Keeps the first message of each error code.
    pub fn record_message(&mut self, outcome: Outcome, message: Option<String>) {
        if let (Outcome::Err(c), Some(m)) = (outcome, message) {
            self.error_examples.entry(code_name(c)).or_insert(m);
        }
    }

    /// Records a call the client did not send (in-flight cap reached).
    pub fn record_not_sent(&mut self, kind: &'static str) {
        self.all.record_not_sent();
        self.window.record_not_sent();
        self.by_kind.entry(kind).or_default().record_not_sent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_errors() {
        let mut b = Bucket::default();
        for i in 1..=1000u64 {
            b.record(
                Duration::from_micros(i),
                Outcome::Ok {
                    version: 1,
                    server_us: 0,
                },
            );
        }
        b.record(
            Duration::from_micros(5),
            Outcome::Err(tonic::Code::ResourceExhausted),
        );
        b.record_not_sent();
        let s = b.summary();
        assert_eq!(s.count, 1000);
        assert!((499..=501).contains(&s.p50), "{s:?}");
        assert!((989..=991).contains(&s.p99), "{s:?}");
        assert_eq!(s.max, 1000);
        assert_eq!(b.errors["RESOURCE_EXHAUSTED"], 1);
        assert_eq!(b.errors["CLIENT_BACKLOG"], 1);
        assert_eq!(b.error_total(), 2);
    }

    #[test]
    fn swap_phases_follow_intended_time() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut st = Stats {
            swap: Some(SwapStats {
                settle: Duration::from_millis(100),
                ..SwapStats::default()
            }),
            ..Stats::default()
        };
        let ok1 = Outcome::Ok {
            version: 1,
            server_us: 0,
        };
        let ok2 = Outcome::Ok {
            version: 2,
            server_us: 0,
        };
        st.record("embed", ms(0), ms(5), ok1);
        if let Some(s) = &mut st.swap {
            s.started = Some(ms(10));
            s.new_version = Some(2);
        }
        // Intended before the publish, completed after it: still "before".
        st.record("embed", ms(9), ms(20), ok1);
        st.record("embed", ms(15), ms(30), ok1);
        st.record("embed", ms(40), ms(50), ok2); // first answer by v2 at 50 ms
        st.record("embed", ms(120), ms(125), ok2); // < 50 + 100: during
        st.record("embed", ms(160), ms(161), ok2); // after
        let s = st.swap.as_ref().unwrap();
        assert_eq!(s.seen, Some(ms(50)));
        assert_eq!((s.before.ok, s.during.ok, s.after.ok), (2, 3, 1));
        assert_eq!(st.versions[&1], 3);
        assert_eq!(st.versions[&2], 3);
        assert_eq!(st.by_kind["embed"].ok, 6);
    }
}
