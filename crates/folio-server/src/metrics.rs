//! Prometheus metrics, in the text exposition format: requests by route and
//! status, commit latency, conflicts, connections (the databases' own are
//! rendered by `Databases::render_metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the commit latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// A method, a status and how many requests had both (on one route).
type MethodStatusCount = (String, u16, u64);

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    /// Requests by route, then by method and status (a handful per route,
    /// found by a scan: counting a request allocates nothing once its
    /// route, method and status were seen).
    requests: Mutex<BTreeMap<String, Vec<MethodStatusCount>>>,
    commit_buckets: [AtomicU64; BUCKETS.len()],
    commit_count: AtomicU64,
    commit_micros: AtomicU64,
    conflicts: AtomicU64,
    connections_open: AtomicU64,
    connections_refused: AtomicU64,
}

impl Metrics {
    /// Counts one request.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !requests.contains_key(route) {
            requests.insert(route.to_owned(), Vec::new());
        }
        let Some(counts) = requests.get_mut(route) else {
            return;
        };
        match counts
            .iter_mut()
            .find(|(known, known_status, _)| known == method && *known_status == status)
        {
            Some((_, _, count)) => *count += 1,
            None => counts.push((method.to_owned(), status, 1)),
        }
    }

    /// Records one commit's latency.
    pub fn commit(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.commit_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.commit_count.fetch_add(1, Ordering::Relaxed);
        self.commit_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts conflicts (one per refused expectation).
    pub fn conflicts(&self, count: usize) {
        self.conflicts.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Counts a connection opened (`true`) or closed (`false`).
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections_open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts a connection refused at the connection limit.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP folio_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE folio_http_requests_total counter\n");
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (route, counts) in requests.iter() {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let mut counts = counts.clone();
            counts.sort();
            for (method, status, count) in counts {
                let _ = writeln!(
                    out,
                    "folio_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}",
                );
            }
        }
        drop(requests);
        out.push_str("# HELP folio_commit_seconds Latency of Engine::commit.\n");
        out.push_str("# TYPE folio_commit_seconds histogram\n");
        for (bucket, bound) in self.commit_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "folio_commit_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.commit_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "folio_commit_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "folio_commit_seconds_sum {}",
            self.commit_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "folio_commit_seconds_count {count}");
        out.push_str("# HELP folio_conflicts_total Expectations refused (optimistic concurrency conflicts).\n");
        out.push_str("# TYPE folio_conflicts_total counter\n");
        let _ = writeln!(
            out,
            "folio_conflicts_total {}",
            self.conflicts.load(Ordering::Relaxed)
        );
        out.push_str("# HELP folio_connections_open Client connections open now.\n");
        out.push_str("# TYPE folio_connections_open gauge\n");
        let _ = writeln!(
            out,
            "folio_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP folio_connections_refused_total Connections refused at the connection limit.\n",
        );
        out.push_str("# TYPE folio_connections_refused_total counter\n");
        let _ = writeln!(
            out,
            "folio_connections_refused_total {}",
            self.connections_refused.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let metrics = Metrics::default();
        for _ in 0..3 {
            metrics.request("PUT", "/db/{db}/docs", 201);
        }
        metrics.request("PUT", "/db/{db}/docs", 412);
        metrics.request("GET", "/db/{db}/docs", 201);
        metrics.request("GET", "/say \"hi\"", 404);
        let text = metrics.render();
        for line in [
            r#"folio_http_requests_total{method="PUT",route="/db/{db}/docs",status="201"} 3"#,
            r#"folio_http_requests_total{method="PUT",route="/db/{db}/docs",status="412"} 1"#,
            r#"folio_http_requests_total{method="GET",route="/db/{db}/docs",status="201"} 1"#,
            r#"folio_http_requests_total{method="GET",route="/say \"hi\"",status="404"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
