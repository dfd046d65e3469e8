//! Runs the client conformance scenarios (conformance/scenarios.json at the repository root)
//! with the Rust client against a real server. The Python and Node clients run the same file.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::Server;
use lockserver_client::proto::ErrorCode;
use lockserver_client::{Client, FencingToken, Handle, LockError, LostReason};
use serde_json::Value;
use tokio::task::JoinHandle;

const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conformance/scenarios.json");

type Outcome = Result<Handle, LockError>;

/// One scenario's state: its clients, saved holds and tokens, started acquires.
struct Run<'a> {
    server: &'a Server,
    admin_secret: String,
    prefix: String,
    clients: HashMap<String, Client>,
    holds: HashMap<String, Handle>,
    tokens: HashMap<String, FencingToken>,
    started: HashMap<String, JoinHandle<Outcome>>,
}

fn text<'v>(step: &'v Value, key: &str) -> &'v str {
    step[key].as_str().unwrap_or_else(|| panic!("step needs a string {key:?}: {step}"))
}

impl Run<'_> {
    fn client(&mut self, step: &Value) -> Client {
        let label = text(step, "client").to_string();
        let addr = self.server.addr.to_string();
        self.clients
            .entry(label)
            .or_insert_with(|| Client::builder().addr(addr).build().expect("client"))
            .clone()
    }

    fn name(&self, step: &Value) -> String {
        if let Some(raw) = step["raw_name"].as_str() {
            return raw.to_string();
        }
        if let Some(repeat) = step["raw_name_repeat"].as_array() {
            let unit = repeat[0].as_str().expect("repeat unit");
            return unit.repeat(repeat[1].as_u64().expect("repeat count") as usize);
        }
        format!("{}{}", self.prefix, text(step, "name"))
    }

    /// The future of an acquire step, ready to await or to spawn.
    fn acquire(
        &mut self,
        step: &Value,
        timeout: Option<Duration>,
    ) -> impl std::future::Future<Output = Outcome> + Send + 'static {
        let client = self.client(step);
        let name = self.name(step);
        let kind = text(step, "kind").to_string();
        let limit = step["limit"].as_u64().unwrap_or(0) as u32;
        let permits = step["permits"].as_u64().unwrap_or(1) as u32;
        async move {
            match kind.as_str() {
                "lock" => client.lock(name).acquire(timeout).await,
                "read" => client.rw_lock(name).acquire_read(timeout).await,
                "write" => client.rw_lock(name).acquire_write(timeout).await,
                "semaphore" => client.semaphore(name, limit).acquire_many(permits, timeout).await,
                other => panic!("unknown kind {other:?}"),
            }
        }
    }

    fn wait(step: &Value) -> Option<Duration> {
        match &step["wait_ms"] {
            Value::Null => None,
            value => Some(Duration::from_millis(value.as_u64().expect("wait_ms"))),
        }
    }

    /// Checks an acquire's outcome against `expect` (and saves the hold).
    fn judge(&mut self, step: &Value, outcome: Outcome) {
        let expect = text(step, "expect");
        let got = match &outcome {
            Ok(_) => "granted",
            Err(LockError::Locked) => "locked",
            Err(LockError::Timeout(_)) => "timeout",
            Err(LockError::InvalidName(_)) => "invalid_name",
            Err(LockError::InvalidArgument(_)) => "invalid_argument",
            Err(error) if error.code() == Some(ErrorCode::Conflict) => "conflict",
            Err(_) => "another error",
        };
        assert_eq!(got, expect, "step {step}: {outcome:?}");
        let Ok(handle) = outcome else { return };
        if let Some(earlier) = step["token_above"].as_str() {
            assert!(handle.token() > self.tokens[earlier], "step {step}: token did not rise");
        }
        if let Some(save) = step["save"].as_str() {
            self.tokens.insert(save.to_string(), handle.token());
            self.holds.insert(save.to_string(), handle);
        }
    }

    async fn step(&mut self, step: &Value) {
        match text(step, "do") {
            "acquire" => {
                let started = Instant::now();
                let outcome = self.acquire(step, Run::wait(step)).await;
                if let Some(min) = step["min_elapsed_ms"].as_u64() {
                    assert!(started.elapsed() >= Duration::from_millis(min), "early: {step}");
                    assert!(
                        started.elapsed() < Duration::from_millis(min) + Duration::from_secs(5)
                    );
                }
                self.judge(step, outcome);
            }
            "try_acquire" => {
                let client = self.client(step);
                let name = self.name(step);
                assert_eq!(text(step, "kind"), "lock", "try_acquire scenarios use locks");
                let got = client.lock(name).try_acquire().await.expect("try_acquire");
                let expect = text(step, "expect");
                assert_eq!(if got.is_some() { "granted" } else { "none" }, expect, "{step}");
            }
            "start_acquire" => {
                let future = self.acquire(step, Run::wait(step));
                self.started.insert(text(step, "as").to_string(), tokio::spawn(future));
            }
            "await" => {
                let task = self.started.remove(text(step, "as")).expect("a started acquire");
                let outcome = tokio::time::timeout(Duration::from_secs(10), task)
                    .await
                    .expect("the started acquire ends within 10 s")
                    .expect("task");
                self.judge(step, outcome);
            }
            "cancel" => {
                let task = self.started.remove(text(step, "as")).expect("a started acquire");
                task.abort();
            }
            "release" => {
                let handle = self.holds.remove(text(step, "hold")).expect("a saved hold");
                let result = handle.release().await;
                match text(step, "expect") {
                    "ok" => result.expect("release"),
                    "lost" => assert!(matches!(result, Err(LockError::Lost(_))), "{result:?}"),
                    other => panic!("unknown release outcome {other:?}"),
                }
            }
            "drop" => drop(self.holds.remove(text(step, "hold")).expect("a saved hold")),
            "check" => {
                let client = self.client(step);
                let token = self.tokens[text(step, "token_of")];
                let valid = client.check(&self.name(step), token).await.expect("check");
                assert_eq!(if valid { "valid" } else { "invalid" }, text(step, "expect"));
            }
            "close" => self.client(step).close().await,
            "expect_waiters" => {
                let kind = if text(step, "kind") == "semaphore" { "semaphores" } else { "locks" };
                let name = common_encode(&self.name(step));
                let count = step["count"].as_u64().expect("count");
                self.server.client.until_waiters(kind, &name, count).await;
            }
            "expect_lost" => {
                let handle = &self.holds[text(step, "hold")];
                let mut lost = handle.lost();
                let reason = tokio::time::timeout(Duration::from_secs(10), lost.wait())
                    .await
                    .expect("the lost signal fires within 10 s");
                let expected = match text(step, "reason") {
                    "admin" => LostReason::Admin,
                    "session" => LostReason::SessionEnded,
                    "expired" => LostReason::Expired,
                    other => panic!("unknown reason {other:?}"),
                };
                assert_eq!(reason, Some(expected), "{step}");
            }
            "admin_release_hold" => {
                let hold_id = self.holds[text(step, "hold")].hold_id().to_string();
                let admin = self.server.client.with_secret(&self.admin_secret);
                let answer = admin.delete(&format!("/v1/admin/holds/{hold_id}")).await;
                assert_eq!(answer.status, 204, "{answer:?}");
            }
            other => panic!("unknown step {other:?}"),
        }
    }
}

/// One path segment: everything but the unreserved characters percent-encoded.
fn common_encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_conformance_scenario() {
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(SCENARIOS).expect("scenarios file"))
            .expect("scenarios JSON");
    let admin_secret = file["admin_secret"].as_str().expect("admin_secret").to_string();
    let server = Server::start(&["--admin-secret", &admin_secret]);
    let scenarios = file["scenarios"].as_array().expect("scenarios");
    assert!(scenarios.len() >= 10, "the file has its scenarios");
    for (index, scenario) in scenarios.iter().enumerate() {
        let mut run = Run {
            server: &server,
            admin_secret: admin_secret.clone(),
            prefix: format!("conformance-{index}-"),
            clients: HashMap::new(),
            holds: HashMap::new(),
            tokens: HashMap::new(),
            started: HashMap::new(),
        };
        let title = scenario["name"].as_str().unwrap_or("?");
        for step in scenario["steps"].as_array().expect("steps") {
            eprintln!("[{title}] {step}");
            run.step(step).await;
        }
        assert!(run.started.is_empty(), "[{title}] a started acquire was never awaited");
        for (_, client) in run.clients {
            client.close().await;
        }
    }
}
