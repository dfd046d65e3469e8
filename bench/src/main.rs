//! lockbench: drives Lockserver and the lock systems people use instead with the same
//! workloads, in the same run, on the same machine, and reports ratios.
//!
//! ```text
//! bench/setup.sh                      # once: installs the anchors
//! cargo build --release -p lockserver -p lockbench
//! target/release/lockbench run [--quick] [--systems LIST] [--workloads LIST] [--json FILE]
//! ```

mod client;
mod null_locker;
mod report;
mod sessions;
mod system;
mod workload;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::system::{Paths, Running, Tuning};
use crate::workload::{Row, Timing};

#[derive(Parser, Debug)]
#[command(
    name = "lockbench",
    about = "Side-by-side benchmarks of Lockserver and other lock systems"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run workloads against systems and write the results.
    Run(Box<RunArgs>),
    /// Serve the locker protocol granting every request at once, with no state (the
    /// `locker-null` system: the most any locker server can do under this load client).
    NullLocker {
        #[arg(long)]
        port: u16,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// A smoke run in seconds: Lockserver and Redis, short windows, one repetition, results to
    /// bench/results/tmp unless --out says otherwise.
    #[arg(long)]
    quick: bool,
    /// Systems, comma-separated (default: all available; with --quick: lockserver-http,
    /// lockserver-http-mem, lockserver-ws, redis). Known: lockserver-http, lockserver-http-mem,
    /// lockserver-ws, lockserver-locker, lockserver-cluster3, redis, etcd, etcd-cluster3, pg,
    /// lockserver-orig, locker-orig, locker-null.
    #[arg(long, value_delimiter = ',')]
    systems: Option<Vec<String>>,
    /// Workloads, comma-separated: uncontended, hot, durable, scale (default: all; with
    /// --quick: uncontended, hot, scale).
    #[arg(long, value_delimiter = ',')]
    workloads: Option<Vec<String>>,
    /// Also write the JSON rows here (they always go to OUT/results.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where results.json, results.md and results.svg go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds each measurement runs (default 10; --quick 1.5).
    #[arg(long)]
    seconds: Option<f64>,
    /// Repetitions of everything, interleaved across systems (default 2; --quick 1).
    #[arg(long)]
    repetitions: Option<u32>,
    /// Locks held in the scale workload (default 1,000,000; --quick 20,000).
    #[arg(long)]
    held: Option<u64>,
    /// Concurrent WebSocket sessions in the scale workload (default 100,000; --quick 2,000),
    /// capped at what the open-file limit lets one server process hold.
    #[arg(long)]
    sessions: Option<usize>,
    /// Our `lockserver` binary (default: beside lockbench).
    #[arg(long)]
    lockserver: Option<PathBuf>,
    /// Where bench/setup.sh installed the anchors (default: .tools in the repository).
    #[arg(long)]
    tools: Option<PathBuf>,
}

const WORKLOADS: &[&str] = &["uncontended", "hot", "durable", "scale"];

fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Run(args) => *args,
        Command::NullLocker { port } => return null_locker::serve(port),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lockbench: cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lockbench: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let quick = args.quick;
    let systems = args.systems.clone().unwrap_or_else(|| {
        let default: &[&str] = if quick {
            &["lockserver-http", "lockserver-http-mem", "lockserver-ws", "redis"]
        } else {
            &system::available()
        };
        default.iter().map(|s| s.to_string()).collect()
    });
    for name in &systems {
        if !system::ALL.contains(&name.as_str()) {
            return Err(format!("unknown system {name}; known: {}", system::ALL.join(", ")));
        }
        if !system::available().contains(&name.as_str()) {
            return Err(format!(
                "{name} arrives with its surface; available: {}",
                system::available().join(", ")
            ));
        }
    }
    let workloads = args.workloads.clone().unwrap_or_else(|| {
        let default: &[&str] = if quick { &["uncontended", "hot", "scale"] } else { WORKLOADS };
        default.iter().map(|s| s.to_string()).collect()
    });
    if let Some(bad) = workloads.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
        return Err(format!("unknown workload {bad}; known: {}", WORKLOADS.join(", ")));
    }
    let seconds = args.seconds.unwrap_or(if quick { 1.5 } else { 10.0 });
    if !(0.1..=3600.0).contains(&seconds) {
        return Err("--seconds must be between 0.1 and 3600".into());
    }
    let timing = Timing {
        warmup: Duration::from_secs_f64(if quick { 0.3 } else { 2.0 }),
        measure: Duration::from_secs_f64(seconds),
    };
    let repetitions = args.repetitions.unwrap_or(if quick { 1 } else { 2 }).max(1);
    let held = args.held.unwrap_or(if quick { 20_000 } else { 1_000_000 });
    let sessions = args.sessions.unwrap_or(if quick { 2_000 } else { 100_000 });
    // Before any system starts, so each inherits it: every connection is a descriptor.
    match system::raise_fd_limit() {
        Ok(limit) => eprintln!("lockbench: open-file limit {limit}"),
        Err(err) => eprintln!("lockbench: cannot raise the open-file limit: {err}"),
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repo = manifest.parent().map_or(manifest.clone(), PathBuf::from);
    let paths = Paths {
        lockserver: match args.lockserver.clone() {
            Some(path) => path,
            None => {
                std::env::current_exe().map_err(|err| err.to_string())?.with_file_name("lockserver")
            }
        },
        tools: args.tools.clone().unwrap_or_else(|| repo.join(".tools")),
    };
    if systems.iter().any(|s| system::is_ours(s)) && !paths.lockserver.is_file() {
        return Err(format!(
            "no lockserver binary at {}; build it (cargo build --release -p lockserver) or pass --lockserver",
            paths.lockserver.display()
        ));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| repo.join(if quick { "bench/results/tmp" } else { "bench/results" }));

    let fsync = fsync_probe()?;
    eprintln!(
        "lockbench: fsync probe (4 KiB append + fdatasync): p50 {:.3} ms, p99 {:.3} ms",
        fsync.0, fsync.1
    );
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    for repetition in 1..=repetitions {
        for name in &systems {
            let lockserver = system::is_ours(name);
            let plain: Vec<&str> = workloads
                .iter()
                .map(String::as_str)
                .filter(|w| *w != "scale" && (lockserver || *w != "durable"))
                // It grants everything: a ceiling for uncontended cycles, meaningless on a hot name.
                .filter(|w| *name != "locker-null" || *w == "uncontended")
                .collect();
            if !plain.is_empty() {
                let system = start(name, &paths, &Tuning::default())?;
                for workload in plain {
                    rows.extend(measure(&system, workload, timing, quick).await?);
                }
            }
            if !workloads.iter().any(|w| w == "scale") {
                continue;
            }
            // The table's memory does not depend on the surface: held locks over HTTP only.
            if name.starts_with("lockserver-http") {
                let tuning = Tuning { max_holds: Some(held + 10_000), ..Tuning::default() };
                let system = start(name, &paths, &tuning)?;
                rows.push(scale(&system, held, timing).await?);
            }
            if name == "lockserver-ws" {
                let tuning = Tuning { max_sessions: Some(sessions + 1_000), ..Tuning::default() };
                let system = start(name, &paths, &tuning)?;
                rows.push(report_row(sessions::concurrent(&system, sessions, timing).await?));
            }
        }
        eprintln!(
            "lockbench: repetition {repetition} done after {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    rows.push(Row {
        cycles_per_s: 1000.0 / fsync.0,
        p50_us: Some((fsync.0 * 1000.0) as u64),
        p99_us: Some((fsync.1 * 1000.0) as u64),
        ..Row::new("fsync-probe", "durable", 1)
    });

    std::fs::create_dir_all(&out).map_err(|err| format!("{}: {err}", out.display()))?;
    let json = serde_json::to_string_pretty(&rows).map_err(|err| err.to_string())?;
    let header = format!(
        "{} repetition(s) of {seconds} s per measurement (medians shown), {} CPUs, load from one \
         client thread on the same machine; fsync probe p50 {:.3} ms, p99 {:.3} ms. Ratios \
         compare medians from this one run.",
        repetitions,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fsync.0,
        fsync.1
    );
    let markdown = report::markdown(&rows, &header);
    write(&out.join("results.json"), &json)?;
    write(&out.join("results.md"), &markdown)?;
    write(&out.join("results.svg"), &report::svg(&rows))?;
    if let Some(path) = &args.json {
        write(path, &json)?;
    }
    let _ = std::io::stdout().write_all(markdown.as_bytes());
    let errors: u64 = rows.iter().map(|row| row.errors).sum();
    if errors > 0 {
        return Err(format!(
            "{errors} cycles failed (see above); results written to {}",
            out.display()
        ));
    }
    eprintln!(
        "lockbench: results in {} after {:.0} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn start(name: &str, paths: &Paths, tuning: &Tuning) -> Result<Running, String> {
    eprintln!("lockbench: starting {name}");
    system::start(name, paths, tuning)
}

async fn measure(
    system: &Running,
    workload: &str,
    timing: Timing,
    quick: bool,
) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    match workload {
        "uncontended" => {
            for clients in [1, 64] {
                rows.push(report_row(
                    workload::uncontended(system, clients, timing, workload, "own-").await?,
                ));
            }
        }
        "hot" => {
            for clients in [10, 64] {
                rows.push(report_row(workload::hot(system, clients, timing).await?));
            }
        }
        "durable" => {
            let mut row = workload::uncontended(system, 64, timing, "durable", "durable-").await?;
            let late = workload::lateness(system, if quick { 20 } else { 200 }, 100).await?;
            row.lateness_p50_ms = workload::percentile(&late, 0.50);
            row.lateness_p99_ms = workload::percentile(&late, 0.99);
            rows.push(report_row(row));
        }
        other => return Err(format!("workload {other} is not run this way")),
    }
    Ok(rows)
}

/// Fills the table with `held` locks, then measures cycles on other names while they are held.
async fn scale(system: &Running, held: u64, timing: Timing) -> Result<Row, String> {
    let took = workload::fill(system, held, 64).await?;
    eprintln!("lockbench: {}: {held} locks acquired in {:.1} s", system.name, took.as_secs_f64());
    let mut row = workload::uncontended(system, 64, timing, "scale", "free-").await?;
    row.held_locks = Some(held);
    // The peak covers building snapshots of the full table (durable).
    row.server_rss_kb = row.server_rss_kb.max(system.peak_rss_kb());
    Ok(report_row(row))
}

fn report_row(row: Row) -> Row {
    eprintln!(
        "lockbench: {:<20} {:<11} {:>3} clients {:>9.0} cycles/s  p50 {:>6} µs  p99 {:>7} µs  cpu {:>4.0}%  rss {:>7} KiB{}",
        row.system,
        row.workload,
        row.clients,
        row.cycles_per_s,
        row.p50_us.unwrap_or(0),
        row.p99_us.unwrap_or(0),
        row.server_cpu_pct,
        row.server_rss_kb,
        if row.errors > 0 { format!("  {} errors", row.errors) } else { String::new() }
    );
    if let Some(extra) = &row.extra {
        eprintln!("lockbench: {:<20} {extra}", row.system);
    }
    row
}

fn write(path: &std::path::Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|err| format!("{}: {err}", path.display()))
}

/// p50 and p99 (ms) of a 4 KiB append + fdatasync in the temporary directory, where the
/// durable systems keep their data during the run.
fn fsync_probe() -> Result<(f64, f64), String> {
    let dir = tempfile::tempdir().map_err(|err| err.to_string())?;
    let mut file =
        std::fs::File::create(dir.path().join("probe")).map_err(|err| err.to_string())?;
    let block = [7u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        file.write_all(&block).map_err(|err| err.to_string())?;
        file.sync_data().map_err(|err| err.to_string())?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Ok((
        workload::percentile(&samples, 0.5).unwrap_or(0.0),
        workload::percentile(&samples, 0.99).unwrap_or(0.0),
    ))
}
