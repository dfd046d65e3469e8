//! The backend conformance suite (tests/common/backend_suite.rs) against the Lockserver backend
//! itself: the same tests the PostgreSQL, Redis and file backends pass.

mod common;

use common::backend_suite::{self as suite, Caps};
use common::Server;
use lockserver_client::Client;

fn client(server: &Server) -> Client {
    Client::builder().addr(server.addr.to_string()).build().expect("client")
}

#[tokio::test(flavor = "multi_thread")]
async fn lockserver_backend_conformance() {
    let server = Server::start(&[]);
    let (a, b, c) = (client(&server), client(&server), client(&server));
    let caps = Caps { tokens: true };
    suite::exclusive(&a, &b, "ls-exclusive", caps).await;
    suite::reader_writer(&a, &b, &c, "ls-rw").await;
    suite::semaphore(&a, &b, &c, "ls-sem").await;
    suite::drop_releases(&a, &b, "ls-drop").await;
    suite::names_of_any_shape(&a, "ls-names").await;
}

#[test]
fn lockserver_backend_exclusive_across_processes() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    suite::contention(
        "lockserver_backend_contention_child",
        "ls-contention",
        3,
        20,
        &[("BACKEND_SUITE_ADDR", &addr)],
    );
}

/// Runs only as a child of the test above (a no-op otherwise).
#[tokio::test(flavor = "multi_thread")]
async fn lockserver_backend_contention_child() {
    let Some((name, cycles, dir)) = suite::contention_child_args() else { return };
    let addr = std::env::var("BACKEND_SUITE_ADDR").expect("server address");
    let client = Client::builder().addr(addr).build().expect("client");
    suite::contention_child(&client, &name, cycles, &dir).await;
    client.close().await;
}
