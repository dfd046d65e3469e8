//! The workloads. A cycle is one successful acquire followed by its release. Load comes from
//! one client thread (many connections on one single-threaded runtime), so on a small machine
//! the server under test keeps most of the CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{Client, Error, Outcome, Wait};
use crate::system::Running;

/// One result row (the JSON output is a list of these).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub system: String,
    pub workload: String,
    pub clients: usize,
    pub cycles_per_s: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p999_us: Option<u64>,
    pub server_cpu_pct: f64,
    pub server_rss_kb: u64,
    pub lateness_p99_ms: Option<f64>,
    /// `hot`: most grants to one client divided by fewest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fairness_max_min: Option<f64>,
    /// `hot`: grants that overtook a request sent over 1 ms earlier and still waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fifo_violations: Option<u64>,
    /// `durable`: timer lateness p50.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lateness_p50_ms: Option<f64>,
    /// `scale`: locks held while measuring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_locks: Option<u64>,
    /// What else the row needs said (the concurrent sessions: how many were held, and why
    /// not as many as asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
    /// Cycles that failed (any error is also reported on stderr).
    pub errors: u64,
}

impl Row {
    /// A row with no figures yet.
    pub fn new(system: &str, workload: &str, clients: usize) -> Row {
        Row {
            system: system.into(),
            workload: workload.into(),
            clients,
            cycles_per_s: 0.0,
            p50_us: None,
            p99_us: None,
            p999_us: None,
            server_cpu_pct: 0.0,
            server_rss_kb: 0,
            lateness_p99_ms: None,
            fairness_max_min: None,
            fifo_violations: None,
            lateness_p50_ms: None,
            held_locks: None,
            extra: None,
            errors: 0,
        }
    }
}

/// How long each measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one client saw in the measured window.
#[derive(Default)]
struct ClientRecord {
    /// Acquire latencies (uncontended) or waits (hot), in µs.
    latencies_us: Vec<u64>,
    /// `hot`: (sent, granted) of each grant, as offsets from the start, in µs.
    grants: Vec<(u64, u64)>,
    errors: u64,
    first_error: Option<Error>,
}

/// CPU and memory of the server over the measured window.
pub struct Watch {
    cpu_start: f64,
    start: Instant,
}

impl Watch {
    pub fn start(system: &Running) -> Watch {
        Watch { cpu_start: system.cpu_seconds(), start: Instant::now() }
    }

    /// The server's CPU % since the start, and its resident memory now.
    pub fn finish(self, system: &Running, row: &mut Row) {
        let wall = self.start.elapsed().as_secs_f64();
        row.server_cpu_pct = 100.0 * (system.cpu_seconds() - self.cpu_start) / wall;
        row.server_rss_kb = system.rss_kb();
    }
}

/// `clients` clients, each on its own name, acquire (try) and release as fast as they can.
pub async fn uncontended(
    system: &Running,
    clients: usize,
    timing: Timing,
    workload: &str,
    prefix: &str,
) -> Result<Row, Error> {
    let mut row = Row::new(&system.name, workload, clients);
    let cycles = (0..clients).map(|i| Cycle::Own(format!("{prefix}{i}"))).collect();
    let (records, elapsed, watch) = drive(system, timing, cycles).await?;
    watch.finish(system, &mut row);
    summarize(&mut row, &records, elapsed);
    Ok(row)
}

/// `clients` clients on one name, each waiting for it (on the server where the system can),
/// releasing at once when granted.
pub async fn hot(system: &Running, clients: usize, timing: Timing) -> Result<Row, Error> {
    let mut row = Row::new(&system.name, "hot", clients);
    let cycles = (0..clients).map(|_| Cycle::Shared("hot".into())).collect();
    let (records, elapsed, watch) = drive(system, timing, cycles).await?;
    watch.finish(system, &mut row);
    summarize(&mut row, &records, elapsed);
    let per_client: Vec<usize> = records.iter().map(|record| record.grants.len()).collect();
    let (most, fewest) = (per_client.iter().max(), per_client.iter().min());
    if let (Some(&most), Some(&fewest)) = (most, fewest) {
        row.fairness_max_min =
            Some(if fewest == 0 { f64::INFINITY } else { most as f64 / fewest as f64 });
    }
    let all: Vec<(u64, u64)> =
        records.iter().flat_map(|record| record.grants.iter().copied()).collect();
    row.fifo_violations = Some(fifo_violations(all, 1_000));
    Ok(row)
}

/// Grants that overtook a request sent more than `margin_us` before theirs and not yet
/// granted. Input: (sent, granted) per grant.
pub fn fifo_violations(mut grants: Vec<(u64, u64)>, margin_us: u64) -> u64 {
    grants.sort_by_key(|&(_, granted)| granted);
    let mut violations = 0;
    let mut earliest_later_send = u64::MAX;
    for &(sent, _) in grants.iter().rev() {
        if earliest_later_send.saturating_add(margin_us) < sent {
            violations += 1;
        }
        earliest_later_send = earliest_later_send.min(sent);
    }
    violations
}

/// Lockserver timers: how late TTL expiry hands a lock to a waiter, and how late a wait times
/// out. `pairs` of each run at once, each on its own name.
pub async fn lateness(system: &Running, pairs: usize, delay_ms: u64) -> Result<Vec<f64>, Error> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..pairs {
        let endpoint = system.endpoint.clone();
        tasks.spawn(async move {
            let name = format!("timer-{i}");
            let mut holder = Client::connect(&endpoint, i, Some(delay_ms)).await?;
            let mut waiter = Client::connect(&endpoint, i, Some(30_000)).await?;
            // Staggered so the timers do not all fire in the same millisecond.
            tokio::time::sleep(Duration::from_millis(i as u64 % 50)).await;
            let sent = Instant::now();
            let Outcome::Granted(_) = holder.acquire(&name, Wait::Try).await? else {
                return Err(format!("{name} was not free"));
            };
            // The TTL runs from the grant, which came after `sent`: lateness is over-stated by
            // at most the acquire's round trip, never under-stated.
            let outcome = waiter.acquire(&name, Wait::For(Duration::from_secs(10))).await?;
            let Outcome::Granted(grant) = outcome else {
                return Err(format!("{name}: the waiter timed out although the TTL had ended"));
            };
            let ttl_late = sent.elapsed().as_secs_f64() * 1000.0 - delay_ms as f64;
            // A wait on the name the waiter now holds (no TTL end in sight) must time out.
            let mut third = Client::connect(&endpoint, i, Some(30_000)).await?;
            let sent = Instant::now();
            let outcome = third.acquire(&name, Wait::For(Duration::from_millis(delay_ms))).await?;
            let wait_late = sent.elapsed().as_secs_f64() * 1000.0 - delay_ms as f64;
            if let Outcome::Granted(_) = outcome {
                return Err(format!("{name}: granted while held"));
            }
            waiter.release(grant).await?;
            Ok::<_, Error>([ttl_late, wait_late])
        });
    }
    let mut late = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        late.extend(joined.map_err(|err| err.to_string())??);
    }
    late.sort_by(f64::total_cmp);
    if late.first().is_some_and(|&first| first < 0.0) {
        return Err(format!("a timer fired {:.3} ms early", -late[0]));
    }
    Ok(late)
}

/// Acquires `count` locks with no expiry, `connections` at a time; returns the time taken.
pub async fn fill(system: &Running, count: u64, connections: usize) -> Result<Duration, Error> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let endpoint = system.endpoint.clone();
        tasks.spawn(async move {
            let mut client = Client::connect(&endpoint, c, None).await?;
            let mut i = c as u64;
            while i < count {
                let name = format!("held-{i}");
                if let Outcome::NotGranted = client.acquire(&name, Wait::Try).await? {
                    return Err(format!("{name} was not free"));
                }
                i += connections as u64;
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|err| err.to_string())??;
    }
    Ok(start.elapsed())
}

/// What a client does, over and over.
enum Cycle {
    /// Try-acquire its own name, release.
    Own(String),
    /// Wait for a name every client wants, release at once.
    Shared(String),
}

impl Cycle {
    async fn run(
        &self,
        client: &mut Client,
        record: &mut ClientRecord,
        measuring: bool,
        origin: Instant,
    ) -> Result<(), Error> {
        let sent = Instant::now();
        let grant = match self {
            Cycle::Own(name) => match client.acquire(name, Wait::Try).await? {
                Outcome::Granted(grant) => grant,
                Outcome::NotGranted => return Err(format!("{name} was not free")),
            },
            Cycle::Shared(name) => {
                match client.acquire(name, Wait::For(Duration::from_secs(60))).await? {
                    Outcome::Granted(grant) => grant,
                    Outcome::NotGranted => return Ok(()),
                }
            }
        };
        let granted = Instant::now();
        if measuring {
            record.latencies_us.push((granted - sent).as_micros() as u64);
            if let Cycle::Shared(_) = self {
                let offset = |at: Instant| at.saturating_duration_since(origin).as_micros() as u64;
                record.grants.push((offset(sent), offset(granted)));
            }
        }
        client.release(grant).await
    }
}

/// Runs one client per cycle: warm-up, then the measured window. Returns each client's
/// record, the measured time, and the server watch started at the window's start.
async fn drive(
    system: &Running,
    timing: Timing,
    cycles: Vec<Cycle>,
) -> Result<(Vec<ClientRecord>, Duration, Watch), Error> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let mut tasks = Vec::new();
    for (i, cycle) in cycles.into_iter().enumerate() {
        let endpoint = system.endpoint.clone();
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut record = ClientRecord::default();
            let mut client = Client::connect(&endpoint, i, Some(HOLD_TTL_MS)).await?;
            while !stop.load(Ordering::Relaxed) {
                let counted = measuring.load(Ordering::Relaxed);
                if let Err(err) = cycle.run(&mut client, &mut record, counted, origin).await {
                    if counted {
                        record.errors += 1;
                    }
                    record.first_error.get_or_insert(err);
                    // The connection may be unusable after an error: start a new one.
                    client = Client::connect(&endpoint, i, Some(HOLD_TTL_MS)).await?;
                }
            }
            Ok::<_, Error>(record)
        }));
    }
    tokio::time::sleep(timing.warmup).await;
    let watch = Watch::start(system);
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(timing.measure).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut records = Vec::new();
    for task in tasks {
        // A client blocked in a wait that no release will end is abandoned after a while.
        match tokio::time::timeout(Duration::from_secs(90), task).await {
            Ok(joined) => records.push(joined.map_err(|err| err.to_string())??),
            Err(_) => return Err("a client did not finish its last cycle within 90 s".into()),
        }
    }
    for record in &records {
        if let Some(err) = &record.first_error {
            eprintln!("lockbench: {}: {err}", system.name);
        }
    }
    Ok((records, elapsed, watch))
}

/// The lease of each benchmark hold where the system has leases: long enough never to end
/// during a cycle.
const HOLD_TTL_MS: u64 = 30_000;

fn summarize(row: &mut Row, records: &[ClientRecord], elapsed: Duration) {
    let mut latencies: Vec<u64> =
        records.iter().flat_map(|record| record.latencies_us.iter().copied()).collect();
    latencies.sort_unstable();
    row.cycles_per_s = latencies.len() as f64 / elapsed.as_secs_f64();
    row.p50_us = percentile(&latencies, 0.50);
    row.p99_us = percentile(&latencies, 0.99);
    row.p999_us = percentile(&latencies, 0.999);
    row.errors = records.iter().map(|record| record.errors).sum();
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&values, 0.5), Some(500));
        assert_eq!(percentile(&values, 0.99), Some(990));
        assert_eq!(percentile(&values, 0.999), Some(999));
        assert_eq!(percentile(&[7u64], 0.999), Some(7));
        assert_eq!(percentile::<u64>(&[], 0.5), None);
    }

    #[test]
    fn fifo_violations_count_overtaking_beyond_the_margin() {
        // In order: no violation.
        assert_eq!(fifo_violations(vec![(0, 10), (5, 20), (6, 30)], 1), 0);
        // Sent at 100 but granted before the request sent at 0: one violation.
        assert_eq!(fifo_violations(vec![(0, 50), (100, 20)], 1), 1);
        // Within the margin: not counted.
        assert_eq!(fifo_violations(vec![(100, 50), (101, 20)], 5), 0);
    }
}
