//! The concurrent sessions of `scale` (lockserver-ws): many streaming sessions open at once,
//! each kept alive by a `ping` op every 10 s (spread evenly over the interval), connected from
//! several loopback source addresses. Measures how many sessions one server holds, its memory
//! with all of them open, its CPU for the keepalives, and the pings' latency.
//!
//! Every session is a socket, a file descriptor at both ends, and no process may hold more
//! than its `RLIMIT_NOFILE`. lockbench raises its soft limit to the hard limit before it starts
//! the server, which inherits it; raising the hard limit needs CAP_SYS_RESOURCE. The server is
//! one process with the same limit as lockbench, so more client processes would not help:
//! the sessions are capped at the descriptors both have free, said on stderr and in the row.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Error, KeepaliveSession};
use crate::system::{self, OpenFiles, Running};
use crate::workload::{percentile, Row, Timing, Watch};

/// How often each session pings.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// The sessions' lease: three ping intervals, so one slow ping does not end a session.
const SESSION_TTL_MS: u64 = 30_000;
/// A ping not answered within this fails its session.
const PING_BOUND: Duration = Duration::from_secs(5);
/// Sessions connecting (TCP, upgrade, `hello`) at once.
const CONNECTS_IN_FLIGHT: usize = 128;
/// One session's connect, upgrade and `hello` give up after this.
const CONNECT_BOUND: Duration = Duration::from_secs(10);
/// How long closing the sessions may take before they are abandoned.
const CLOSE_BOUND: Duration = Duration::from_secs(30);
/// Descriptors left to each process for everything but the sessions' sockets: listeners,
/// data and log files, epoll instances.
const FD_RESERVE: u64 = 64;
/// Sessions per loopback source address. A socket bound to an address before it connects
/// takes its port from that address's own ephemeral range (28,232 ports by default): this
/// leaves room for connections in TIME_WAIT from a previous repetition.
const SESSIONS_PER_SOURCE: usize = 20_000;
/// Source addresses used however few the sessions.
const MIN_SOURCES: usize = 4;

/// Opens up to `asked` sessions on `system` (lockserver-ws), keeps them open through the
/// warm-up and the measured window with a ping per session every 10 s, then closes them.
/// `clients` in the row is the sessions established; `cycles_per_s` the pings answered per
/// second and the latencies theirs; CPU is the server's over the window, RSS its resident
/// memory at the window's end with every session open.
pub async fn concurrent(system: &Running, asked: usize, timing: Timing) -> Result<Row, Error> {
    let server_files = system
        .open_files()
        .ok_or_else(|| format!("{}: cannot read its open-file limit", system.name))?;
    let own_files = system::open_files(std::process::id())
        .ok_or("cannot read lockbench's own open-file limit")?;
    let plan = plan(asked, server_files, own_files);
    if plan.sessions == 0 {
        return Err(format!(
            "{}: no descriptors free for sessions ({})",
            system.name,
            plan.cap.unwrap_or_default()
        ));
    }
    if let Some(cap) = &plan.cap {
        eprintln!(
            "lockbench: {}: opening {} of the {} sessions asked: {cap} (one descriptor per \
             session; {FD_RESERVE} kept back for the process's own files)",
            system.name,
            grouped(plan.sessions),
            grouped(asked)
        );
    }
    let sources = sources(plan.sessions);
    let idle_rss_kb = system.rss_kb();

    let shared = Arc::new(Shared {
        server: system.endpoint.addr,
        connects: Semaphore::new(CONNECTS_IN_FLIGHT),
        measuring: AtomicBool::new(false),
        anchor: Instant::now(),
    });
    // Each session reports once through `opened` (true: its hello was answered); `stop` ends
    // them all after the window.
    let (opened_sender, mut opened) = mpsc::unbounded_channel::<bool>();
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for index in 0..plan.sessions {
        let phase = PING_INTERVAL.mul_f64(index as f64 / plan.sessions as f64);
        let source = sources[index % sources.len()];
        tasks.spawn(keep(shared.clone(), source, phase, opened_sender.clone(), stopped.clone()));
    }
    drop(opened_sender);
    let deadline = shared.anchor + connect_phase_bound(plan.sessions);
    let (mut reported, mut established) = (0, 0);
    while reported < plan.sessions {
        match tokio::time::timeout_at(deadline, opened.recv()).await {
            Ok(Some(ok)) => {
                reported += 1;
                established += usize::from(ok);
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Sessions still waiting for their turn to connect give up.
    shared.connects.close();
    let connect_seconds = shared.anchor.elapsed().as_secs_f64();
    eprintln!(
        "lockbench: {}: {} sessions open in {connect_seconds:.1} s from {} source addresses",
        system.name,
        grouped(established),
        sources.len()
    );

    tokio::time::sleep(timing.warmup).await;
    let mut row = Row::new(&system.name, "scale", established);
    let watch = Watch::start(system);
    shared.measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(timing.measure).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = window.elapsed();
    watch.finish(system, &mut row);
    let _ = stop.send(true);

    let mut records = Vec::new();
    let close_deadline = Instant::now() + CLOSE_BOUND;
    loop {
        match tokio::time::timeout_at(close_deadline, tasks.join_next()).await {
            Ok(Some(joined)) => records.push(joined.map_err(|err| err.to_string())?),
            Ok(None) => break,
            Err(_) => {
                let abandoned = tasks.len();
                tasks.abort_all();
                let mut record = SessionRecord::default();
                record.fail(format!("{abandoned} sessions did not close within {CLOSE_BOUND:?}"));
                records.push(record);
                break;
            }
        }
    }

    let mut latencies: Vec<u64> =
        records.iter().flat_map(|record| record.latencies_us.iter().copied()).collect();
    latencies.sort_unstable();
    row.clients = records.iter().filter(|record| record.established).count();
    row.cycles_per_s = latencies.len() as f64 / elapsed.as_secs_f64();
    row.p50_us = percentile(&latencies, 0.50);
    row.p99_us = percentile(&latencies, 0.99);
    row.p999_us = percentile(&latencies, 0.999);
    row.errors = records.iter().map(|record| record.errors).sum();
    let failed: Vec<&Error> =
        records.iter().filter_map(|record| record.first_error.as_ref()).collect();
    if let Some(first) = failed.first() {
        eprintln!(
            "lockbench: {}: {} sessions failed; the first: {first}",
            system.name,
            failed.len()
        );
    }
    let held = records.iter().filter(|record| record.held).count();
    let per_session_kb = row.server_rss_kb.saturating_sub(idle_rss_kb) as f64 / held.max(1) as f64;
    let mut extra = format!("{} sessions held", grouped(held));
    if let Some(cap) = &plan.cap {
        extra += &format!(" ({cap}; {} asked)", grouped(asked));
    }
    extra += &format!(
        ", {per_session_kb:.1} KiB RSS per session, a ping per session every {} s, opened in \
         {connect_seconds:.1} s",
        PING_INTERVAL.as_secs()
    );
    row.extra = Some(extra);
    Ok(row)
}

/// How many sessions to open, and why not as many as asked.
#[derive(Debug, PartialEq)]
struct Plan {
    sessions: usize,
    cap: Option<String>,
}

/// All `asked`, unless the server or lockbench has fewer descriptors free (each keeps
/// [`FD_RESERVE`] for its own files).
fn plan(asked: usize, server: OpenFiles, own: OpenFiles) -> Plan {
    let room = |files: OpenFiles| files.limit.saturating_sub(files.open + FD_RESERVE);
    let (server_room, own_room) = (room(server), room(own));
    let sessions = (asked as u64).min(server_room).min(own_room) as usize;
    let cap = if sessions == asked {
        None
    } else if server_room <= own_room {
        Some(format!("server fd limit {}", server.limit))
    } else {
        Some(format!("lockbench fd limit {}", own.limit))
    };
    Plan { sessions, cap }
}

/// The loopback addresses the sessions connect from: at least [`MIN_SOURCES`], and enough
/// that none needs more than [`SESSIONS_PER_SOURCE`] ports.
fn sources(sessions: usize) -> Vec<IpAddr> {
    let count = sessions.div_ceil(SESSIONS_PER_SOURCE).max(MIN_SOURCES);
    (1..=count).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, (i >> 8) as u8, i as u8))).collect()
}

/// How long opening `sessions` may take before lockbench goes on with those open.
fn connect_phase_bound(sessions: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(2) * sessions as u32
}

/// The first of the times `start`, `start + interval`, … that is not before `now`.
fn next_slot(start: Instant, interval: Duration, now: Instant) -> Instant {
    if now <= start {
        return start;
    }
    let periods = (now - start).as_nanos().div_ceil(interval.as_nanos());
    start + interval * periods as u32
}

/// What every session shares.
struct Shared {
    server: SocketAddr,
    /// Permits to connect; closed when the connect phase ends.
    connects: Semaphore,
    /// Set during the measured window: pings sent meanwhile are recorded.
    measuring: AtomicBool,
    /// When the sessions were started; each pings at its own phase after it.
    anchor: Instant,
}

/// What one session saw.
#[derive(Default)]
struct SessionRecord {
    established: bool,
    /// Still open when the window ended.
    held: bool,
    /// Round trips of the pings sent in the window, in µs.
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<Error>,
}

impl SessionRecord {
    fn fail(&mut self, err: Error) {
        self.errors += 1;
        self.first_error.get_or_insert(err);
    }
}

/// One session: connects from `source`, says so through `opened`, pings every
/// [`PING_INTERVAL`] at `phase` after the anchor until `stop`, then closes.
async fn keep(
    shared: Arc<Shared>,
    source: IpAddr,
    phase: Duration,
    opened: mpsc::UnboundedSender<bool>,
    mut stop: watch::Receiver<bool>,
) -> SessionRecord {
    let mut record = SessionRecord::default();
    let connected = match shared.connects.acquire().await {
        Ok(_permit) => tokio::time::timeout(
            CONNECT_BOUND,
            KeepaliveSession::open(shared.server, source, SESSION_TTL_MS),
        )
        .await
        .unwrap_or_else(|_| Err(format!("connect and hello took over {CONNECT_BOUND:?}"))),
        Err(_) => Err("not connected within the connect phase".into()),
    };
    let _ = opened.send(connected.is_ok());
    let mut session = match connected {
        Ok(session) => session,
        Err(err) => {
            record.fail(err);
            return record;
        }
    };
    record.established = true;
    let mut slot = next_slot(shared.anchor + phase, PING_INTERVAL, Instant::now());
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            idle = session.idle_until(slot) => if let Err(err) = idle {
                record.fail(err);
                return record;
            },
        }
        let measuring = shared.measuring.load(Ordering::Relaxed);
        let sent = Instant::now();
        match tokio::time::timeout(PING_BOUND, session.ping()).await {
            Ok(Ok(())) if measuring => record.latencies_us.push(sent.elapsed().as_micros() as u64),
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                record.fail(err);
                return record;
            }
            Err(_) => {
                record.fail(format!("a ping unanswered after {PING_BOUND:?}"));
                return record;
            }
        }
        // A slot missed (a slow answer) is skipped: the session keeps its phase.
        slot = next_slot(slot + PING_INTERVAL, PING_INTERVAL, Instant::now());
    }
    record.held = true;
    session.close().await;
    record
}

/// `n` with thousands separated by commas.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(limit: u64, open: u64) -> OpenFiles {
        OpenFiles { limit, open }
    }

    #[test]
    fn sessions_are_capped_by_the_scarcer_process_and_the_row_says_which() {
        let plenty = files(1_048_576, 10);
        assert_eq!(plan(100_000, plenty, plenty), Plan { sessions: 100_000, cap: None });
        assert_eq!(
            plan(100_000, files(20_000, 36), files(20_000, 10)),
            Plan { sessions: 19_900, cap: Some("server fd limit 20000".into()) }
        );
        assert_eq!(
            plan(100_000, plenty, files(20_000, 36)),
            Plan { sessions: 19_900, cap: Some("lockbench fd limit 20000".into()) }
        );
        assert_eq!(plan(50, files(100, 90), plenty).sessions, 0);
    }

    #[test]
    fn at_least_four_sources_and_never_more_than_their_share_of_ports() {
        assert_eq!(sources(10).len(), 4);
        assert_eq!(sources(100_000).len(), 5);
        assert_eq!(sources(100_001).len(), 6);
        assert_eq!(sources(4)[3], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
        assert_eq!(
            sources(300 * SESSIONS_PER_SOURCE)[255],
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, 0))
        );
    }

    #[test]
    fn a_session_pings_at_its_next_slot_never_in_the_past() {
        let start = Instant::now();
        let interval = Duration::from_secs(10);
        assert_eq!(next_slot(start, interval, start - Duration::from_secs(1)), start);
        assert_eq!(next_slot(start, interval, start), start);
        assert_eq!(next_slot(start, interval, start + Duration::from_millis(1)), start + interval);
        assert_eq!(next_slot(start, interval, start + interval * 3), start + interval * 3);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(19_900), "19,900");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }
}
