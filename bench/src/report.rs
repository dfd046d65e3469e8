//! The outputs: JSON rows, a Markdown table with same-run ratios, and an SVG bar chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::workload::Row;

/// The median of repeated rows with the same system, workload and clients (by cycles/s;
/// latencies and resources taken from that same repetition).
pub fn medians(rows: &[Row]) -> Vec<Row> {
    let mut groups: BTreeMap<(String, usize, String), Vec<&Row>> = BTreeMap::new();
    for row in rows {
        groups
            .entry((row.workload.clone(), row.clients, row.system.clone()))
            .or_default()
            .push(row);
    }
    let order = |row: &Row| crate::system::ALL.iter().position(|name| *name == row.system);
    let mut out: Vec<Row> = groups
        .into_values()
        .map(|mut group| {
            group.sort_by(|a, b| a.cycles_per_s.total_cmp(&b.cycles_per_s));
            group[(group.len() - 1) / 2].clone()
        })
        .collect();
    out.sort_by_key(|row| (workload_rank(&row.workload), row.clients, order(row)));
    out
}

fn workload_rank(workload: &str) -> usize {
    ["uncontended", "hot", "durable", "scale"].iter().position(|w| *w == workload).unwrap_or(9)
}

/// What each Lockserver figure is compared with.
fn anchor(row: &Row) -> Option<&'static str> {
    match (row.workload.as_str(), row.system.as_str()) {
        ("durable", "lockserver-http") => Some("lockserver-http-mem"),
        ("uncontended", "lockserver-http-mem") => Some("lockserver-orig"),
        ("uncontended", "lockserver-http") => Some("etcd"),
        ("uncontended" | "hot", "lockserver-ws") => Some("redis"),
        ("uncontended" | "hot", "lockserver-locker") => Some("locker-orig"),
        ("hot", "lockserver-http-mem" | "lockserver-http") => Some("redis"),
        _ => None,
    }
}

/// The Markdown report: one table per workload, medians of the repetitions, and each
/// Lockserver row's ratio to its anchor measured in the same run.
pub fn markdown(rows: &[Row], header: &str) -> String {
    let rows = medians(rows);
    let mut out = String::new();
    let _ = writeln!(out, "# lockbench results\n\n{header}\n");
    let mut current = String::new();
    for row in &rows {
        if row.workload != current {
            current = row.workload.clone();
            let _ = writeln!(out, "\n## {current}\n");
            let _ = writeln!(
                out,
                "| system | clients | cycles/s | p50 µs | p99 µs | p99.9 µs | server CPU % | server RSS MiB | extra | ratio |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|");
        }
        let ratio = anchor(row)
            .and_then(|anchor| {
                rows.iter()
                    .find(|other| {
                        other.system == anchor
                            && other.clients == row.clients
                            && other.workload == row.workload
                    })
                    .filter(|other| other.cycles_per_s > 0.0)
                    .map(|other| format!("{:.2}× {anchor}", row.cycles_per_s / other.cycles_per_s))
            })
            .unwrap_or_default();
        let mut extra = Vec::new();
        if let Some(fairness) = row.fairness_max_min {
            extra.push(format!("fairness {fairness:.2}"));
        }
        if let Some(violations) = row.fifo_violations {
            extra.push(format!("FIFO violations {violations}"));
        }
        if let (Some(p50), Some(p99)) = (row.lateness_p50_ms, row.lateness_p99_ms) {
            extra.push(format!("timer lateness p50 {p50:.1} ms, p99 {p99:.1} ms"));
        }
        if let Some(held) = row.held_locks {
            extra.push(format!("{held} locks held"));
        }
        if let Some(text) = &row.extra {
            extra.push(text.clone());
        }
        if row.errors > 0 {
            extra.push(format!("{} errors", row.errors));
        }
        let us = |value: Option<u64>| value.map_or("–".into(), |v| v.to_string());
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {:.0} | {:.1} | {} | {} |",
            row.system,
            row.clients,
            row.cycles_per_s,
            us(row.p50_us),
            us(row.p99_us),
            us(row.p999_us),
            row.server_cpu_pct,
            row.server_rss_kb as f64 / 1024.0,
            extra.join("; "),
            ratio
        );
    }
    out
}

/// A grouped horizontal bar chart of cycles/s (medians), one group per workload and client
/// count.
pub fn svg(rows: &[Row]) -> String {
    let rows = medians(rows);
    let groups: Vec<(String, usize)> = {
        let mut seen = Vec::new();
        for row in &rows {
            let key = (row.workload.clone(), row.clients);
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        seen
    };
    let bar = 18.0;
    let label_width = 300.0;
    let chart_width = 560.0;
    let height: f64 = groups
        .iter()
        .map(|key| {
            30.0 + bar
                * rows.iter().filter(|r| (r.workload.clone(), r.clients) == *key).count() as f64
        })
        .sum::<f64>()
        + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = label_width + chart_width + 120.0
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">lockbench: cycles/s (median), longer is better</text>"#
    );
    let mut y = 40.0;
    for (workload, clients) in &groups {
        let members: Vec<&Row> =
            rows.iter().filter(|r| &r.workload == workload && r.clients == *clients).collect();
        let max = members.iter().map(|r| r.cycles_per_s).fold(1.0, f64::max);
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}" font-weight="bold">{} · {} clients</text>"#,
            y + 12.0,
            escape(workload),
            clients
        );
        y += 18.0;
        for row in members {
            let width = chart_width * row.cycles_per_s / max;
            let fill = if crate::system::is_ours(&row.system) { "#2b6cb0" } else { "#a0aec0" };
            let _ =
                writeln!(out, r#"<text x="20" y="{}">{}</text>"#, y + 13.0, escape(&row.system));
            let _ = writeln!(
                out,
                r#"<rect x="{label_width}" y="{}" width="{width:.1}" height="{}" fill="{fill}"/>"#,
                y + 2.0,
                bar - 4.0
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{}">{:.0}</text>"#,
                label_width + width + 6.0,
                y + 13.0,
                row.cycles_per_s
            );
            y += bar;
        }
        y += 12.0;
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, cycles: f64) -> Row {
        Row {
            cycles_per_s: cycles,
            p50_us: Some(100),
            p99_us: Some(900),
            server_cpu_pct: 150.0,
            server_rss_kb: 20480,
            ..Row::new(system, "uncontended", 64)
        }
    }

    #[test]
    fn medians_pick_the_middle_repetition_and_ratios_use_the_anchor() {
        let rows = vec![
            row("lockserver-http-mem", 30.0),
            row("lockserver-orig", 40.0),
            row("lockserver-http-mem", 50.0),
            row("lockserver-orig", 20.0),
            row("lockserver-http-mem", 40.0),
        ];
        let medians = medians(&rows);
        assert_eq!(medians.len(), 2);
        assert_eq!(medians[0].system, "lockserver-http-mem");
        assert_eq!(medians[0].cycles_per_s, 40.0);
        // Two repetitions: the lower one.
        assert_eq!(medians[1].cycles_per_s, 20.0);
        let table = markdown(&rows, "test");
        assert!(table.contains("| lockserver-http-mem | 64 | 40 |"), "{table}");
        assert!(table.contains("2.00× lockserver-orig"), "{table}");
        let chart = svg(&rows);
        assert!(chart.starts_with("<svg") && chart.contains("lockserver-orig"));
    }
}
