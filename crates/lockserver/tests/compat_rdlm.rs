//! The RDLM REST API (COMPAT.md §2): bodies, Location, HAL views, waits, auth modes, admin
//! routes, and the "we do better" lines (no ghost waiters, 400 not 500, --public-url).

mod common;

use std::time::{Duration, Instant};

use common::{raw_request, Client, Resp, Server};
use serde_json::{json, Value};

const ADMIN: &str = "rdlm-admin";

/// The credential a request carries.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Nothing,
    /// HTTP Basic: any user name, this password.
    Basic(&'a str),
    Bearer(&'a str),
}

async fn send(server: &Server, method: &str, path: &str, auth: Auth<'_>, body: &str) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base))
        .body(body.to_string());
    match auth {
        Auth::Nothing => {}
        Auth::Basic(password) => request = request.basic_auth("anyone", Some(password)),
        Auth::Bearer(secret) => request = request.bearer_auth(secret),
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, headers, body, text }
}

async fn lock(server: &Server, resource: &str, body: Value) -> Resp {
    send(server, "POST", &format!("/locks/{resource}"), Auth::Nothing, &body.to_string()).await
}

fn path_of(location: &str) -> String {
    let rest = location.strip_prefix("http://").expect("an absolute http:// Location");
    rest[rest.find('/').unwrap()..].to_string()
}

#[tokio::test]
async fn a_lock_is_created_viewed_and_deleted() {
    let server = Server::start(&[]);
    assert_eq!(send(&server, "GET", "/", Auth::Nothing, "").await.status, 200);
    let created =
        lock(&server, "res1", json!({"title": {"job": 7}, "wait": 2.9, "lifetime": "30"})).await;
    assert_eq!(created.status, 201, "{created:?}");
    let location = created.header("location").to_string();
    assert!(location.starts_with(&format!("http://{}/locks/res1/", server.addr)), "{location}");
    let uid = location.rsplit('/').next().unwrap().to_string();
    assert_eq!(uid.len(), 32);

    let view = send(&server, "GET", &path_of(&location), Auth::Nothing, "").await;
    assert_eq!(view.status, 200);
    assert_eq!(view.header("content-type"), "application/hal+json");
    let body = &view.body;
    assert_eq!((body["uid"].as_str(), body["active"].as_bool()), (Some(uid.as_str()), Some(true)));
    assert_eq!(body["title"], json!({"job": 7}), "any JSON title comes back");
    assert_eq!((body["wait"].as_u64(), body["lifetime"].as_u64()), (Some(2), Some(30)));
    assert_eq!(body["active_since"].as_str().unwrap().len(), 26, "{body}");
    assert!(body["active_expires"].as_str() > body["active_since"].as_str());
    assert_eq!(body["_links"]["self"]["href"], format!("/locks/res1/{uid}"));
    assert_eq!(body["_links"]["resource"]["href"], "/resources/res1");

    // One lock model: the native view shows it, native acquires conflict with it.
    let native = server.client.get("/v1/locks/res1").await;
    assert_eq!(native.body["holders"][0]["hold_id"], uid.as_str());
    server.client.lock("res1", json!({})).await.assert_error(409, "locked");

    assert_eq!(send(&server, "DELETE", &path_of(&location), Auth::Nothing, "").await.status, 204);
    assert_eq!(send(&server, "DELETE", &path_of(&location), Auth::Nothing, "").await.status, 404);
    assert_eq!(send(&server, "GET", &path_of(&location), Auth::Nothing, "").await.status, 404);
    // A native hold is not an RDLM lock.
    let native = server.client.lock("res1", json!({})).await;
    let native_path = format!("/locks/res1/{}", native.hold_id());
    assert_eq!(send(&server, "GET", &native_path, Auth::Nothing, "").await.status, 404);
    assert_eq!(send(&server, "DELETE", &native_path, Auth::Nothing, "").await.status, 404);
}

#[tokio::test]
async fn bad_bodies_and_names_are_400_never_500() {
    let server = Server::start(&[]);
    for body in [
        "",
        "not json",
        "[1]",
        r#"{"wait":1,"lifetime":1}"#,
        r#"{"title":"t","lifetime":1}"#,
        r#"{"title":"t","wait":1}"#,
        r#"{"title":"t","wait":-1,"lifetime":1}"#,
        r#"{"title":"t","wait":"soon","lifetime":1}"#,
        r#"{"title":"t","wait":1,"lifetime":0}"#,
        r#"{"title":"t","wait":100000,"lifetime":1}"#,
    ] {
        let resp = send(&server, "POST", "/locks/res", Auth::Nothing, body).await;
        assert_eq!(resp.status, 400, "{body}: {resp:?}");
    }
    let title = "x".repeat(300);
    assert_eq!(
        lock(&server, "res", json!({"title": title, "wait": 0, "lifetime": 1})).await.status,
        400
    );
    let resp = lock(&server, "bad-name", json!({"title": "t", "wait": 0, "lifetime": 1})).await;
    assert_eq!(resp.status, 400);
}

#[tokio::test]
async fn waits_run_out_with_408_and_a_waiter_is_visible_until_granted() {
    let server = Server::start(&[]);
    let first = lock(&server, "busy", json!({"title": "a", "wait": 0, "lifetime": 1})).await;
    assert_eq!(first.status, 201);
    let started = Instant::now();
    let at_once = lock(&server, "busy", json!({"title": "b", "wait": 0, "lifetime": 5})).await;
    assert_eq!(at_once.status, 408);
    assert!(started.elapsed() < Duration::from_millis(500), "wait 0 answers at once");

    // A waiter shows as inactive with its wait times, then is granted when the lifetime ends.
    let server_base = server.base.clone();
    let waiting = tokio::spawn(async move {
        let body = json!({"title": "w", "wait": 10, "lifetime": 5}).to_string();
        reqwest::Client::new().post(format!("{server_base}/locks/busy")).body(body).send().await
    });
    server.client.until_waiters("locks", "busy", 1).await;
    let view = server.client.get("/v1/locks/busy").await;
    assert_eq!(view.body["holders"].as_array().unwrap().len(), 1);
    let granted = waiting.await.unwrap().unwrap();
    assert_eq!(granted.status(), 201);
    assert!(started.elapsed() >= Duration::from_secs(1), "never before the lifetime ends");
}

#[tokio::test]
async fn a_waiter_whose_client_leaves_is_withdrawn() {
    let server = Server::start(&[]);
    assert_eq!(
        lock(&server, "ghost", json!({"title": "a", "wait": 0, "lifetime": 30})).await.status,
        201
    );
    let stream = raw_request(
        server.addr,
        "POST",
        "/locks/ghost",
        r#"{"title":"b","wait":20,"lifetime":30}"#,
    )
    .await;
    server.client.until_waiters("locks", "ghost", 1).await;
    drop(stream);
    server.client.until_waiters("locks", "ghost", 0).await;
}

#[tokio::test]
async fn admin_routes_take_basic_auth_with_the_admin_secret() {
    let server = Server::start(&["--admin-secret", ADMIN]);
    let good = Auth::Basic(ADMIN);
    let unauthorized = send(&server, "GET", "/resources", Auth::Nothing, "").await;
    assert_eq!(unauthorized.status, 401);
    assert_eq!(unauthorized.header("www-authenticate"), "Basic realm=Restricted");
    assert_eq!(send(&server, "GET", "/resources", Auth::Basic("wrong"), "").await.status, 401);

    let active = lock(&server, "resA", json!({"title": "a", "wait": 0, "lifetime": 30})).await;
    let empty = send(&server, "GET", "/resources", good, "").await;
    let names: Vec<&str> = empty.body["_embedded"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|resource| resource["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["resA"]);
    let one = send(&server, "GET", "/resources/resA", good, "").await;
    assert_eq!(one.body["name"], "resA");
    let locks = one.body["_embedded"]["locks"].as_array().unwrap();
    assert_eq!(locks[0]["uid"], active.header("location").rsplit('/').next().unwrap());
    let none = send(&server, "GET", "/resources/nothing", good, "").await;
    assert_eq!(none.status, 200);
    assert!(none.body.get("_embedded").is_none(), "omitted when empty: {}", none.body);

    assert_eq!(send(&server, "DELETE", "/resources/resA", good, "").await.status, 204);
    assert_eq!(send(&server, "DELETE", "/resources/resA", good, "").await.status, 404);
    lock(&server, "resB", json!({"title": "b", "wait": 0, "lifetime": 30})).await;
    assert_eq!(send(&server, "DELETE", "/resources", good, "").await.status, 204);
    let after = send(&server, "GET", "/resources", good, "").await;
    assert_eq!(after.body["_embedded"]["resources"], json!([]));

    let no_admin = Server::start(&[]);
    assert_eq!(send(&no_admin, "GET", "/resources", good, "").await.status, 403);
}

#[tokio::test]
async fn with_a_client_secret_lock_routes_need_it_unless_opened() {
    let server = Server::start(&["--secret", "client-secret"]);
    let body = json!({"title": "t", "wait": 0, "lifetime": 30}).to_string();
    let refused = send(&server, "POST", "/locks/sec", Auth::Nothing, &body).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), "Basic realm=Restricted");
    let by_basic = send(&server, "POST", "/locks/sec", Auth::Basic("client-secret"), &body).await;
    assert_eq!(by_basic.status, 201);
    let by_bearer =
        send(&server, "POST", "/locks/sec2", Auth::Bearer("client-secret"), &body).await;
    assert_eq!(by_bearer.status, 201);

    let open = Server::start(&[
        "--secret",
        "client-secret",
        "--rdlm-open",
        "--public-url",
        "http://locks.example:8080/",
    ]);
    let created = send(&open, "POST", "/locks/open", Auth::Nothing, &body).await;
    assert_eq!(created.status, 201);
    assert!(created.header("location").starts_with("http://locks.example:8080/locks/open/"));
    assert!(open.stderr().contains("--rdlm-open"), "announced at start-up");
    // Native routes keep their credential.
    let native = Client::new(open.base.clone());
    native.get("/v1/locks/open").await.assert_error(401, "unauthorized");
}
