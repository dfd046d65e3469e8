//! Compile tests: the original `lockserver` crate's client code, exactly as its README and its
//! tests write it (with the crate renamed), still compiles against this crate. The functions are
//! type-checked, not run (they would need a server at a fixed address); the integration tests
//! in crates/lockserver/tests/client.rs run the same API against a real server.
#![allow(dead_code, unused_must_use, clippy::let_unit_value)]

use lockserver_client as lockserver;

/// The seed README's "Rust Example", verbatim but for the crate name.
fn readme_example() {
    use lockserver::{lock_scope, LockserverClient};

    // Loads from env/.env if None (including secret)
    let client = LockserverClient::new_with_env(None::<String>, None::<String>, None::<String>);
    lock_scope!(&client, "resource", {
        // critical section
    });

    // Override address, owner, or secret:
    let client = LockserverClient::new_with_env(
        Some("192.168.1.10:9000"),
        Some("myworker"),
        Some("your-strong-secret"),
    );

    // Non-blocking mode:
    if let Ok(()) = client.acquire_with_mode("resource", lockserver::LockMode::NonBlocking) {
        let _guard = lockserver::LockGuard::new(&client, "resource");
        // critical section
    }

    // With expiration:
    if let Ok(()) =
        client.acquire_with_mode_and_expire("resource", lockserver::LockMode::NonBlocking, 10)
    {
        let _guard = lockserver::LockGuard::new(&client, "resource");
        // critical section
    }
}

/// The seed's `tests/lock_scope_macro.rs`.
fn seed_macro_tests() {
    use lockserver::{lock_scope, LockserverClient};

    let client = LockserverClient::new_with_env(
        Some("127.0.0.1:8080"),
        Some("worker1"),
        None::<String>, // Use env or default for secret
    );
    let _ = std::panic::catch_unwind(|| {
        lock_scope!(&client, "resource", {
            // critical section
            let x = 2 + 2;
            assert_eq!(x, 4);
        });
    });
    let _ = std::panic::catch_unwind(|| {
        lock_scope!(&client, "resource_non_blocking", non_blocking, {
            // critical section
        });
    });
}

/// The seed's signatures: `new(addr, owner, secret)`, `acquire`, `release`, and
/// `acquire_with_mode_and_expire` with `Option<u64>`; `lock_scope!` now returns a `Result`.
fn seed_signatures() -> std::io::Result<()> {
    let client = lockserver::LockserverClient::new("127.0.0.1:8080", "worker1", "changeme");
    client.acquire("a")?;
    client.acquire_with_mode_and_expire("a", lockserver::LockMode::Blocking, Some(10))?;
    client.acquire_with_mode_and_expire("a", lockserver::LockMode::Blocking, None)?;
    client.release("a")?;
    let value: i32 = lockserver::lock_scope!(&client, "a", { 1 })?;
    let _ = value;
    Ok(())
}

#[test]
fn the_seed_api_compiles() {
    // Naming them makes the compiler check them; running them needs a server.
    let _: [fn(); 2] = [readme_example, seed_macro_tests];
    let _: fn() -> std::io::Result<()> = seed_signatures;
}
