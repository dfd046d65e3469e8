//! The binary's configuration surface: `--help`, the start-up line and ready file, the
//! security default, and the precedence flags > environment > `.env` > TOML > defaults.

mod common;

use std::process::Command;

use common::{field, Server, Start, BIN};
use serde_json::json;

#[test]
fn help_documents_every_option_and_its_variable() {
    let output = Command::new(BIN).arg("--help").output().expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--config",
        "-b, --bind",
        "-p, --port",
        "--data-dir",
        "--in-memory",
        "--secret",
        "--admin-secret",
        "--default-ttl-ms",
        "--max-wait-ms",
        "--min-session-ttl-ms",
        "--max-session-ttl-ms",
        "--max-names",
        "--max-holds",
        "--max-waiters-per-name",
        "--max-sessions",
        "--max-connections",
        "--max-body-bytes",
        "--log-level",
        "--ready-file",
        "LOCKSERVER_SECRET",
        "LOCKSERVER_BIND_IP",
        "LOCKSERVER_PORT",
        "LOCKSERVER_HTTP_PORT",
        "LOCKSERVER_ADMIN_SECRET",
        "LOCKSERVER_DATA_DIR",
        "LOCKSERVER_IN_MEMORY",
        "LOCKSERVER_MAX_CONNECTIONS",
        ".env",
        "TOML",
    ] {
        assert!(help.contains(option), "--help does not mention {option}:\n{help}");
    }
}

#[test]
fn a_public_bind_without_a_secret_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["--bind", "0.0.0.0", "--port", "0"])
        .current_dir(dir.path())
        .env_remove("LOCKSERVER_SECRET")
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0 without a secret"), "{stderr}");
    assert!(stderr.contains("LOCKSERVER_SECRET"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).is_empty(), "it never announced itself");
}

#[test]
fn bad_configuration_fails_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["--port", "not-a-port"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--port"));
    let missing = Command::new(BIN)
        .args(["--config", "/nonexistent/lockserver.toml"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/lockserver.toml"));
}

#[tokio::test]
async fn startup_line_and_ready_file_give_the_bound_address() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let server = Server::start_with(Start {
        args: vec!["--ready-file".into(), ready.display().to_string(), "--in-memory".into()],
        ..Start::default()
    });
    let line = &server.startup_line;
    assert!(line.starts_with("lockserver listening http=127.0.0.1:"), "{line}");
    assert_ne!(server.addr.port(), 0, "port 0 resolves to the bound port");
    assert_eq!(field(line, "auth"), "off");
    assert_eq!(field(line, "admin"), "off");
    assert_eq!(field(line, "storage"), "in-memory");
    assert_eq!(field(line, "data_dir"), server.data_dir.display().to_string());
    let locker = field(line, "locker");
    assert!(locker.starts_with("127.0.0.1:") && !locker.ends_with(":0"), "{line}");
    let contents = std::fs::read_to_string(&ready).expect("ready file written before the line");
    assert_eq!(contents, format!("http={}\nlocker={locker}\n", server.addr));
    assert_eq!(server.client.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn flags_beat_environment_beat_dotenv_beat_config_file() {
    let cwd = tempfile::tempdir().unwrap();
    let toml = cwd.path().join("lockserver.toml");
    std::fs::write(&toml, "default_ttl_ms = 4000\nmax_wait_ms = 4000\nmax_sessions = 4\n").unwrap();
    std::fs::write(
        cwd.path().join(".env"),
        "LOCKSERVER_DEFAULT_TTL_MS=3000\nLOCKSERVER_MAX_WAIT_MS=3000\n",
    )
    .unwrap();
    let start = Start {
        args: vec![
            "--config".into(),
            toml.display().to_string(),
            "--default-ttl-ms".into(),
            "1000".into(),
        ],
        cwd: Some(cwd.path().to_path_buf()),
        ..Start::default()
    }
    .env("LOCKSERVER_DEFAULT_TTL_MS", "2000")
    .env("LOCKSERVER_SECRET", "from-env");
    let server = Server::start_with(start);
    let client = server.client.with_secret("from-env");
    // default_ttl_ms: flag 1000 wins over env 2000, .env 3000 and file 4000.
    let hold = client.lock("ttl", json!({})).await;
    let expires = hold.body["expires_in_ms"].as_u64().unwrap();
    assert!(expires <= 1000 && expires > 500, "{expires}");
    // max_wait_ms: .env 3000 wins over the file's 4000.
    client.lock("w", json!({"wait_ms": 3001})).await.assert_error(400, "invalid_argument");
    assert_eq!(client.lock("w", json!({"wait_ms": 3000})).await.status, 201);
    // max_sessions comes from the file.
    for _ in 0..4 {
        assert_eq!(client.post("/v1/sessions", json!({"ttl_ms": 5000})).await.status, 201);
    }
    client.post("/v1/sessions", json!({"ttl_ms": 5000})).await.assert_error(429, "limit_exceeded");
    // The secret came from the environment.
    server.client.lock("x", json!({})).await.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn port_and_its_http_port_alias() {
    let free_port =
        || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for key in ["LOCKSERVER_PORT", "LOCKSERVER_HTTP_PORT"] {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["--ready-file", "ready", "--in-memory"])
            .current_dir(dir.path())
            .env(key, port.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(field(line.trim(), "http"), format!("127.0.0.1:{port}"), "{key}: {line}");
    }
}
