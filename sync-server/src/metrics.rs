//! Counters exported at `GET /metrics` in Prometheus' text format.
//!
//! Plain atomics: every hot path bumps a counter with one relaxed add, and the exporter
//! reads them without locks.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the store-commit latency histogram buckets.
const COMMIT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Server-wide counters.
#[derive(Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections closed for a protocol, size or liveness reason.
    pub connections_rejected: AtomicU64,
    /// Rooms with a live actor.
    pub rooms_open: AtomicU64,
    /// Documents held in memory.
    pub documents_loaded: AtomicU64,
    /// Frames received.
    pub messages_in: AtomicU64,
    /// Frames sent.
    pub messages_out: AtomicU64,
    /// Bytes received in frames.
    pub bytes_in: AtomicU64,
    /// Bytes sent in frames.
    pub bytes_out: AtomicU64,
    /// Durable acks sent.
    pub acks_sent: AtomicU64,
    /// Connections dropped because their outbound queue was full.
    pub slow_consumers_dropped: AtomicU64,
    /// Store commits.
    pub store_commits: AtomicU64,
    /// Jobs written by those commits.
    pub store_jobs: AtomicU64,
    /// Bytes written.
    pub store_bytes: AtomicU64,
    commit_micros_sum: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
}

impl Metrics {
    pub(crate) fn record_commit(&self, took: Duration, jobs: usize, bytes: usize) {
        self.store_commits.fetch_add(1, Relaxed);
        self.store_jobs.fetch_add(jobs as u64, Relaxed);
        self.store_bytes.fetch_add(bytes as u64, Relaxed);
        self.commit_micros_sum
            .fetch_add(took.as_micros() as u64, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = COMMIT_BUCKETS.iter().position(|b| secs <= *b) {
            self.commit_buckets[i].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn frame_in(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn frame_out(&self, bytes: usize) {
        self.messages_out.fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    /// Render in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        };
        one(
            "tandem_connections",
            "gauge",
            "Open WebSocket connections.",
            &self.connections_open,
        );
        one(
            "tandem_connections_total",
            "counter",
            "WebSocket connections accepted.",
            &self.connections_total,
        );
        one(
            "tandem_connections_rejected_total",
            "counter",
            "Connections closed for protocol, size or liveness reasons.",
            &self.connections_rejected,
        );
        one(
            "tandem_slow_consumers_dropped_total",
            "counter",
            "Connections dropped because their outbound queue was full.",
            &self.slow_consumers_dropped,
        );
        one(
            "tandem_rooms",
            "gauge",
            "Rooms with a live actor.",
            &self.rooms_open,
        );
        one(
            "tandem_documents",
            "gauge",
            "Documents held in memory.",
            &self.documents_loaded,
        );
        one(
            "tandem_messages_received_total",
            "counter",
            "Frames received.",
            &self.messages_in,
        );
        one(
            "tandem_messages_sent_total",
            "counter",
            "Frames sent.",
            &self.messages_out,
        );
        one(
            "tandem_bytes_received_total",
            "counter",
            "Bytes received in frames.",
            &self.bytes_in,
        );
        one(
            "tandem_bytes_sent_total",
            "counter",
            "Bytes sent in frames.",
            &self.bytes_out,
        );
        one(
            "tandem_durable_acks_total",
            "counter",
            "Durable acks sent to authors.",
            &self.acks_sent,
        );
        one(
            "tandem_store_jobs_total",
            "counter",
            "Records written by store commits.",
            &self.store_jobs,
        );
        one(
            "tandem_store_bytes_total",
            "counter",
            "Bytes written by store commits.",
            &self.store_bytes,
        );
        let name = "tandem_store_commit_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Store commit (fsync included) latency.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (b, c) in COMMIT_BUCKETS.iter().zip(&self.commit_buckets) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.store_commits.load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            s,
            "{name}_sum {}",
            self.commit_micros_sum.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "{name}_count {count}");
        s
    }
}
