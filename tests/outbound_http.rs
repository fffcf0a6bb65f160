//! Outbound HTTP against real loopback servers: every limit of
//! `capabilities::http` refuses or cuts its attack, and a neighbour plugin
//! still answers afterwards.
//!
//! The requests enter where `wasi:http/outgoing-handler` hands them to the
//! host: the `send_request` hook of a loaded 0.2.0 plugin, whose grant is
//! the real intersection of its `describe()` and its `botbox.toml` section.
//! The servers are plain TCP listeners on 127.0.0.1 that speak HTTP/1.1 by
//! hand, so a test controls every byte (a trickle, a held connection, a
//! gigabyte streamed in chunks and never held in memory).

mod support;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use botbox::capabilities::http::{HttpHooks, hooks};
use botbox::wit::types::{CustomEvent, Event};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use support::http_server::{Reply, serve};
use support::{Ask, TestHost, WatPlugin, send_and_expect};
use wasmtime_wasi_http::{Error, WasiBody, WasiHttpHooks};

fn poke() -> Event {
    Event::Custom(CustomEvent {
        name: "poke".into(),
        payload: String::new(),
    })
}

/// A 0.1.0 plugin that sends to lobby: the neighbour that must keep
/// answering.
fn neighbour() -> Vec<u8> {
    let mut p = WatPlugin::new(Ask::default());
    let msg = p.text_message("lobby", "hello from the neighbour");
    let body = send_and_expect(msg, 0);
    p.body(&body).build()
}

/// A host with the 0.2.0 plugin `fetcher`, which asks for `asks`, and the
/// neighbour; `extra` is the fetcher's `botbox.toml` lines.
async fn start(asks: &[&str], extra: &str) -> TestHost {
    let asks: &'static [&'static str] = Box::leak(
        asks.iter()
            .map(|a| &*Box::leak(a.to_string().into_boxed_str()))
            .collect::<Vec<&'static str>>()
            .into_boxed_slice(),
    );
    let fetcher = WatPlugin::new(Ask::default()).http(asks).build();
    let host = TestHost::new(&[("fetcher", fetcher, extra), ("neighbour", neighbour(), "")]);
    host.load_all().await;
    host
}

/// The hooks of one call of `fetcher` starting now.
fn fetcher_hooks(host: &TestHost) -> HttpHooks {
    let plugin = host.app.runtime.plugin("fetcher").expect("fetcher loaded");
    hooks(
        &plugin.context.info,
        &plugin.context.slices.http,
        Instant::now(),
    )
}

fn get(url: &str) -> http::Request<WasiBody> {
    request(url, Empty::new().map_err(|e| match e {}).boxed_unsync())
}

fn request(url: &str, body: WasiBody) -> http::Request<WasiBody> {
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().to_string();
    // wasmtime-wasi-http sets `Host` to the authority before the hook runs.
    http::Request::get(uri)
        .header(http::header::HOST, authority)
        .body(body)
        .unwrap()
}

type Sent = Result<http::Response<WasiBody>, Error>;

async fn send(hooks: &mut HttpHooks, request: http::Request<WasiBody>) -> Sent {
    let future = hooks.send_request(request, None, Box::new(async { Ok(()) }));
    Pin::from(future).await.map(|(response, _io)| response)
}

/// Reads a body to its end; the error that cut it, if any.
async fn read_all(response: http::Response<WasiBody>) -> Result<Bytes, Error> {
    response.into_body().collect().await.map(|c| c.to_bytes())
}

async fn assert_neighbour_answers(host: &TestHost) {
    host.app
        .runtime
        .dispatch("neighbour", &poke())
        .await
        .expect("the neighbour still answers");
}

fn plain_loopback(port: u16) -> String {
    format!("http = [\"127.0.0.1:{port}\"]\nhttp_plain_loopback = true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_request_gets_its_answer_and_is_counted() {
    let server = serve(Reply::Ok("hello")).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let host = start(&[&grant], &plain_loopback(server.port)).await;
    let mut hooks = fetcher_hooks(&host);
    let response = send(&mut hooks, get(&format!("http://{grant}/path?secret=1")))
        .await
        .expect("granted");
    assert_eq!(response.status(), 200);
    assert_eq!(read_all(response).await.unwrap(), "hello");
    let plugin = host.app.runtime.plugin("fetcher").unwrap();
    let stats = &plugin.context.slices.http.stats;
    assert_eq!(stats.completed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.bytes_received.load(Ordering::Relaxed), 5);
    let mut metrics = String::new();
    botbox::capabilities::http::render_metrics(&mut metrics, [("fetcher", &**stats)].into_iter());
    assert!(
        metrics.contains("botbox_http_requests_total{plugin=\"fetcher\",outcome=\"completed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_outside_the_grant_is_refused_before_connecting() {
    let granted = serve(Reply::Ok("hello")).await;
    let other = serve(Reply::Ok("other")).await;
    let grant = format!("127.0.0.1:{}", granted.port);
    let host = start(&[&grant], &plain_loopback(granted.port)).await;
    let mut hooks = fetcher_hooks(&host);
    let refused = send(
        &mut hooks,
        get(&format!("http://127.0.0.1:{}/", other.port)),
    )
    .await;
    assert!(
        matches!(refused, Err(Error::HttpRequestDenied)),
        "{refused:?}"
    );
    assert_eq!(other.connections.load(Ordering::SeqCst), 0);
    // Asked for but not granted by the operator: refused too.
    let host = host_without_grant(&grant).await;
    let mut hooks = fetcher_hooks(&host);
    let refused = send(&mut hooks, get(&format!("http://{grant}/"))).await;
    assert!(
        matches!(refused, Err(Error::HttpRequestDenied)),
        "{refused:?}"
    );
    assert_eq!(granted.connections.load(Ordering::SeqCst), 0);
    assert_neighbour_answers(&host).await;
}

async fn host_without_grant(asks: &str) -> TestHost {
    start(&[asks], "http_plain_loopback = true").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_needs_the_operators_loopback_switch() {
    let server = serve(Reply::Ok("hello")).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let host = start(&[&grant], &format!("http = [\"{grant}\"]")).await;
    let mut hooks = fetcher_hooks(&host);
    let refused = send(&mut hooks, get(&format!("http://{grant}/"))).await;
    assert!(
        matches!(refused, Err(Error::HttpRequestDenied)),
        "{refused:?}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_that_resolves_to_a_loopback_address_is_refused() {
    // `localhost` is a real name the system resolver answers (from
    // /etc/hosts) with 127.0.0.1 or ::1: the operator granted the name, not
    // the address, so the connect-time check refuses it.
    let server = serve(Reply::Ok("hello")).await;
    let name = format!("localhost:{}", server.port);
    let host = start(&[&name], &format!("http = [\"{name}\"]")).await;
    let mut hooks = fetcher_hooks(&host);
    let refused = send(&mut hooks, get(&format!("https://{name}/"))).await;
    assert!(
        matches!(refused, Err(Error::DestinationIpProhibited)),
        "{refused:?}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    assert_neighbour_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_its_ungranted_target_is_refused() {
    let elsewhere = serve(Reply::Ok("elsewhere")).await;
    let target = format!("http://127.0.0.1:{}/", elsewhere.port);
    let server = serve(Reply::Redirect(target.clone())).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let host = start(&[&grant], &plain_loopback(server.port)).await;
    let mut hooks = fetcher_hooks(&host);
    let response = send(&mut hooks, get(&format!("http://{grant}/")))
        .await
        .expect("granted");
    // The 3xx comes back to the plugin as it is.
    assert_eq!(response.status(), 302);
    let location = response.headers()[http::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(location, target);
    assert_eq!(elsewhere.connections.load(Ordering::SeqCst), 0);
    // A plugin that follows it makes a new request, which is checked anew.
    let followed = send(&mut hooks, get(&location)).await;
    assert!(
        matches!(followed, Err(Error::HttpRequestDenied)),
        "{followed:?}"
    );
    assert_eq!(elsewhere.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_header_naming_another_host_is_refused() {
    let server = serve(Reply::Ok("hello")).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let host = start(&[&grant], &plain_loopback(server.port)).await;
    let mut hooks = fetcher_hooks(&host);
    let mut spoofed = get(&format!("http://{grant}/"));
    spoofed.headers_mut().append(
        http::header::HOST,
        http::HeaderValue::from_static("metadata.google.internal"),
    );
    let refused = send(&mut hooks, spoofed).await;
    assert!(
        matches!(refused, Err(Error::HttpRequestDenied)),
        "{refused:?}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_response_is_cut_at_the_deadline() {
    let server = serve(Reply::Trickle).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let extra = format!(
        "{}\nlimits = {{ deadline_ms = 300 }}",
        plain_loopback(server.port)
    );
    let host = start(&[&grant], &extra).await;
    let mut hooks = fetcher_hooks(&host);
    let response = send(&mut hooks, get(&format!("http://{grant}/")))
        .await
        .expect("headers arrive");
    let cut = read_all(response).await;
    assert!(matches!(cut, Err(Error::HttpResponseTimeout)), "{cut:?}");
    assert_neighbour_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_response_is_cut_at_the_size_cap() {
    let server = serve(Reply::Gigabyte).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let extra = format!(
        "{}\nlimits = {{ deadline_ms = 60000, http_timeout_ms = 60000, http_response_max_kb = 256 }}",
        plain_loopback(server.port)
    );
    let host = start(&[&grant], &extra).await;
    let mut hooks = fetcher_hooks(&host);
    let response = send(&mut hooks, get(&format!("http://{grant}/")))
        .await
        .expect("headers arrive");
    let cut = read_all(response).await;
    assert!(
        matches!(cut, Err(Error::HttpResponseBodySize(Some(n))) if n == 256 << 10),
        "{cut:?}"
    );
    let plugin = host.app.runtime.plugin("fetcher").unwrap();
    let received = plugin
        .context
        .slices
        .http
        .stats
        .bytes_received
        .load(Ordering::Relaxed);
    // Cut within one chunk of the cap, far below the gigabyte.
    assert!(received <= (256 << 10) + (64 << 10), "{received}");
    // A response that declares its size over the cap is refused at once.
    let declared = serve(Reply::DeclaredGigabyte).await;
    let grant = format!("127.0.0.1:{}", declared.port);
    let host = start(&[&grant], &plain_loopback(declared.port)).await;
    let mut hooks = fetcher_hooks(&host);
    let refused = send(&mut hooks, get(&format!("http://{grant}/"))).await;
    assert!(
        matches!(refused, Err(Error::HttpResponseBodySize(Some(1073741824)))),
        "{refused:?}"
    );
    assert_neighbour_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_the_cap_is_refused() {
    let server = serve(Reply::Ok("hello")).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let extra = format!(
        "{}\nlimits = {{ http_request_max_kb = 1 }}",
        plain_loopback(server.port)
    );
    let host = start(&[&grant], &extra).await;
    let mut hooks = fetcher_hooks(&host);
    let big = Full::new(Bytes::from(vec![b'x'; 4096]))
        .map_err(|e| match e {})
        .boxed_unsync();
    let mut post = request(&format!("http://{grant}/"), big);
    *post.method_mut() = http::Method::POST;
    post.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(4096));
    let refused = send(&mut hooks, post).await;
    assert!(
        matches!(refused, Err(Error::HttpRequestBodySize(_))),
        "{refused:?}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_hits_the_budget_and_the_in_flight_cap() {
    let server = serve(Reply::Ok("hello")).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let extra = format!(
        "{}\nlimits = {{ http_requests_per_minute = 3 }}",
        plain_loopback(server.port)
    );
    let host = start(&[&grant], &extra).await;
    let mut hooks = fetcher_hooks(&host);
    for _ in 0..3 {
        let response = send(&mut hooks, get(&format!("http://{grant}/")))
            .await
            .expect("within the budget");
        read_all(response).await.unwrap();
    }
    let refused = send(&mut hooks, get(&format!("http://{grant}/"))).await;
    assert!(
        matches!(refused, Err(Error::ConnectionLimitReached)),
        "{refused:?}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 3);
    assert_neighbour_answers(&host).await;

    // One in flight at most: a held response keeps the slot until dropped.
    let closed = Arc::new(tokio::sync::Notify::new());
    let holder = serve(Reply::Hold(closed.clone())).await;
    let grant = format!("127.0.0.1:{}", holder.port);
    let extra = format!(
        "{}\nlimits = {{ http_max_in_flight = 1, deadline_ms = 60000, http_timeout_ms = 60000 }}",
        plain_loopback(holder.port)
    );
    let host = start(&[&grant], &extra).await;
    let mut hooks = fetcher_hooks(&host);
    let held = send(&mut hooks, get(&format!("http://{grant}/")))
        .await
        .expect("first request");
    let refused = send(&mut hooks, get(&format!("http://{grant}/"))).await;
    assert!(
        matches!(refused, Err(Error::ConnectionLimitReached)),
        "{refused:?}"
    );
    drop(held);
    let again = send(&mut hooks, get(&format!("http://{grant}/"))).await;
    assert!(again.is_ok(), "the slot is free again: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_past_the_deadline_is_closed_by_the_host() {
    let closed = Arc::new(tokio::sync::Notify::new());
    let server = serve(Reply::Hold(closed.clone())).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let extra = format!(
        "{}\nlimits = {{ deadline_ms = 300 }}",
        plain_loopback(server.port)
    );
    let host = start(&[&grant], &extra).await;
    let mut hooks = fetcher_hooks(&host);
    let future = hooks.send_request(
        get(&format!("http://{grant}/")),
        None,
        Box::new(async { Ok(()) }),
    );
    let (response, io) = Pin::from(future).await.expect("headers arrive");
    // The plugin keeps the response and never reads it; the host's own
    // connection task ends at the deadline, and the server sees the close.
    let io_result = Pin::from(io).await;
    assert!(
        matches!(io_result, Err(Error::HttpResponseTimeout)),
        "{io_result:?}"
    );
    closed.notified().await;
    drop(response);
    assert_neighbour_answers(&host).await;
}

// ---- a real 0.2.0 component, through the linker's `wasi:http` ----

/// A 0.2.0 WAT plugin that, on any event, sends `GET http://{authority}/`
/// through `wasi:http/outgoing-handler` and traps unless the answer is a
/// 200: the guest side is wasmtime-wasi-http, the sending botbox's hooks.
fn wasi_http_getter(authority: &str) -> Vec<u8> {
    wasi_http_getter_of(authority, "0.2.0")
}

/// The same plugin built against `version`: for 0.1.0 it asks for no host
/// (0.1.0 has no way to).
fn wasi_http_getter_of(authority: &str, version: &str) -> Vec<u8> {
    let dir = support::repo_root().join("tests/wit/wasi-0.2.12");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("vendored WASI WIT");
    // In dependency order: each package is pushed after those it uses.
    let packages: Vec<String> = [
        "io.wit",
        "clocks.wit",
        "random.wit",
        "filesystem.wit",
        "sockets.wit",
        "cli.wit",
        "http.wit",
    ]
    .into_iter()
    .map(read)
    .collect();
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    let asks: &'static str = Box::leak(authority.to_string().into_boxed_str());
    let asks: &'static [&'static str] = Box::leak(vec![asks].into_boxed_slice());
    let p = WatPlugin::new(Ask::default());
    let p = if version == "0.2.0" { p.http(asks) } else { p };
    let mut p = p
        .foreign(&packages, &["wasi:http/outgoing-handler@0.2.12"])
        .imports(
            r#"(import "wasi:http/types@0.2.12" "[constructor]fields" (func $fields (result i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-request" (func $request (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-request.set-scheme" (func $scheme (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-request.set-authority" (func $authority (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-request.set-path-with-query" (func $path (param i32 i32 i32 i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]future-incoming-response.subscribe" (func $subscribe (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]future-incoming-response.get" (func $get (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]incoming-response.status" (func $status (param i32) (result i32)))
  (import "wasi:io/poll@0.2.12" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:http/outgoing-handler@0.2.12" "handle" (func $handle (param i32 i32 i32 i32)))"#,
        );
    let (auth, auth_len) = p.data.string(authority);
    let (slash, slash_len) = p.data.string("/");
    // Return areas: `result<future, error-code>` (payload at 8, the
    // error-code holding a u64) and `option<result<result<response,
    // error-code>>>` (tags at 0, 8 and 16, the response at 24).
    const RET: u32 = 60_400;
    let body = format!(
        "(local.set $i (call $request (call $fields)))
         ;; some(HTTP)
         (if (call $scheme (local.get $i) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0))
           (then unreachable))
         (if (call $authority (local.get $i) (i32.const 1) (i32.const {auth}) (i32.const {auth_len}))
           (then unreachable))
         ;; wasi:http builds no URI without a path
         (if (call $path (local.get $i) (i32.const 1) (i32.const {slash}) (i32.const {slash_len}))
           (then unreachable))
         (call $handle (local.get $i) (i32.const 0) (i32.const 0) (i32.const {RET}))
         (if (i32.load8_u (i32.const {RET})) (then unreachable))
         (local.set $i (i32.load (i32.const {ret8})))
         (call $block (call $subscribe (local.get $i)))
         (call $get (local.get $i) (i32.const {RET}))
         (if (i32.eqz (i32.load8_u (i32.const {RET}))) (then unreachable))
         (if (i32.load8_u (i32.const {ret8})) (then unreachable))
         ;; err(error-code): the host refused or the request failed
         (if (i32.load8_u (i32.const {ret16})) (then unreachable))
         (if (i32.ne (call $status (i32.load (i32.const {ret24}))) (i32.const 200))
           (then unreachable))",
        ret8 = RET + 8,
        ret16 = RET + 16,
        ret24 = RET + 24,
    );
    p.body(&body).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_2_component_reaches_a_granted_host_through_wasi_http_and_no_other() {
    let granted = serve(Reply::Ok("hello")).await;
    let other = serve(Reply::Ok("other")).await;
    let grant = format!("127.0.0.1:{}", granted.port);
    let ungranted = format!("127.0.0.1:{}", other.port);
    let host = TestHost::new(&[
        (
            "getter",
            wasi_http_getter(&grant),
            &plain_loopback(granted.port),
        ),
        // Asks for its target, but the operator granted another address.
        (
            "stray",
            wasi_http_getter(&ungranted),
            &format!("http = [\"{grant}\"]\nhttp_plain_loopback = true"),
        ),
        ("neighbour", neighbour(), ""),
    ]);
    host.load_all().await;
    host.app
        .runtime
        .dispatch("getter", &poke())
        .await
        .expect("the granted GET answers 200");
    assert_eq!(granted.connections.load(Ordering::SeqCst), 1);
    let refused = host.app.runtime.dispatch("stray", &poke()).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(other.connections.load(Ordering::SeqCst), 0);
    assert_neighbour_answers(&host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_component_that_imports_wasi_http_is_refused_at_load() {
    let server = serve(Reply::Ok("hello")).await;
    let grant = format!("127.0.0.1:{}", server.port);
    let host = TestHost::new(&[
        (
            "old",
            wasi_http_getter_of(&grant, "0.1.0"),
            &plain_loopback(server.port),
        ),
        ("neighbour", neighbour(), ""),
    ]);
    let errors = host.app.load_plugins().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(text.starts_with("plugin `old`"), "{text}");
    assert!(text.contains("wasi:http/"), "{text}");
    assert!(text.contains("from botbox:bot@0.2.0 on"), "{text}");
    assert_neighbour_answers(&host).await;
}

/// A JavaScript bot built by componentize-js against `wit/0.2.0` with its
/// `http` feature on: on the custom event it `fetch`es the payload URL from
/// an `async handle` and sends `status N` or `error ...` to `lobby`. It
/// asks for `asks`.
fn js_fetcher(dir: &std::path::Path, asks: &[String]) -> Vec<u8> {
    let componentize = support::repo_root().join("plugins/js/node_modules/.bin/componentize-js");
    assert!(
        componentize.is_file(),
        "{} is missing: `cargo xtask plugins` installs it",
        componentize.display()
    );
    let source = dir.join("fetcher.js");
    std::fs::write(
        &source,
        format!(
            r#"import {{ sendBroadcast }} from 'botbox:bot/broadcast@0.2.0';
export const handler = {{
  describe() {{
    return {{ name: 'fetcher', version: '1', channels: ['lobby'], events: ['custom'], schedules: [], http: {asks:?} }};
  }},
  // async: componentize-js runs the event loop to the end of a call only
  // for an export that returns a promise; a plain handle's fetch is never sent.
  async handle(event) {{
    let text;
    try {{
      text = `status ${{(await fetch(event.val.payload)).status}}`;
    }} catch (e) {{
      text = `error ${{e}}`;
    }}
    sendBroadcast({{ channel: 'lobby', content: {{ tag: 'text', val: text }} }});
  }},
}};
"#
        ),
    )
    .unwrap();
    let out = dir.join("fetcher.wasm");
    let status = std::process::Command::new(&componentize)
        .arg(&source)
        .arg("--wit")
        .arg(support::repo_root().join("wit/0.2.0"))
        .args(["--world-name", "bot", "--out"])
        .arg(&out)
        .status()
        .expect("componentize-js runs");
    assert!(status.success(), "componentize-js failed: {status}");
    std::fs::read(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_fetch_reaches_a_granted_host_and_is_refused_elsewhere() {
    assert_fetches_the_granted_host_only(
        js_fetcher,
        // JS needs more than the default heap (plugins/README.md).
        "limits = { memory_mb = 32 }",
        "status 200",
        // Firefox's wording, which componentize-js's fetch keeps.
        "error TypeError",
    )
    .await;
}

// ---- the Python and C examples (sdk/templates/{python,c}/http_example) ----

/// Copies `file` of an example into `dir` with its `ASKS` line (`asks_line`
/// in the example) replaced by `replacement`: the example asks for a public
/// host, the tests for their loopback servers.
fn example_source(
    example: &str,
    file: &str,
    asks_line: &str,
    replacement: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let path = support::repo_root().join(example).join(file);
    let text = std::fs::read_to_string(&path).expect("the example's source");
    assert!(
        text.contains(asks_line),
        "{} no longer has the line `{asks_line}` this test replaces",
        path.display()
    );
    let out = dir.join(file);
    std::fs::write(&out, text.replace(asks_line, replacement)).unwrap();
    out
}

/// Runs a guest toolchain step; a program that does not start is a missing
/// toolchain, and says which xtask command installs it.
fn run_step(what: &str, command: &mut std::process::Command, install: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run ({e}): `{install}` installs it"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}\n(a toolchain missing a part? `{install}`)",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python example built by componentize-py 0.25.1 (the venv
/// `cargo xtask plugins` installs, as the Python template test uses)
/// against its `wit/` world: botbox:bot@0.2.0 plus
/// `wasi:http/outgoing-handler`. It asks for `asks`.
fn python_fetcher(dir: &std::path::Path, asks: &[String]) -> Vec<u8> {
    let example = "sdk/templates/python/http_example";
    let venv = support::target_dir().join("guests/python-venv/bin");
    let componentize = venv.join("componentize-py");
    assert!(
        componentize.is_file(),
        "{} is missing: run `cargo xtask plugins` first (`cargo xtask test` does)",
        componentize.display()
    );
    let app_dir = dir.join("python");
    std::fs::create_dir_all(&app_dir).unwrap();
    example_source(
        example,
        "app.py",
        "ASKS: list[str] = [\"api.example.org:443\"]",
        &format!("ASKS: list[str] = {asks:?}"),
        &app_dir,
    );
    let out = dir.join("python-fetcher.wasm");
    // The venv's own python runs the script: its `#!` line names the path
    // the venv was made at, which a copied target dir no longer has.
    run_step(
        "componentize-py",
        std::process::Command::new(venv.join("python"))
            .arg(&componentize)
            .env_remove("VIRTUAL_ENV")
            .arg("--quiet")
            .arg("--wit-path")
            .arg(support::repo_root().join(example).join("wit"))
            .args(["--world", "bot", "componentize", "--python-path"])
            .arg(&app_dir)
            .arg("app")
            .arg("--output")
            .arg(&out),
        "cargo xtask plugins",
    );
    std::fs::read(&out).unwrap()
}

/// `cargo xtask ARGS` in this checkout, the commands the C template's
/// `build.sh` runs (in the same target dir as this test, so it reuses the
/// xtask that built the plugins).
fn xtask(args: &[&std::ffi::OsStr]) -> std::process::Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .arg("run")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(support::repo_root().join("Cargo.toml"))
        .args(["-p", "xtask", "--"])
        .args(args);
    command
}

/// clang for wasm32-wasi as `cargo xtask` finds it: the wasi-sdk named by
/// `WASI_SDK_PATH`, else `clang` with wasi-libc (Debian's).
fn wasi_clang() -> std::process::Command {
    let mut command = match std::env::var_os("WASI_SDK_PATH") {
        Some(sdk) if !sdk.is_empty() => {
            let sdk = std::path::PathBuf::from(sdk);
            let mut c = std::process::Command::new(sdk.join("bin/clang"));
            c.arg(format!(
                "--sysroot={}",
                sdk.join("share/wasi-sysroot").display()
            ));
            c
        }
        _ => std::process::Command::new("clang"),
    };
    command.args(["--target=wasm32-wasi", "-mexec-model=reactor"]);
    command
}

/// The C example: bindings by `cargo xtask c-bindings` (wit-bindgen-c 0.60)
/// from its `wit/` world, compiled by clang with the flags of every C guest
/// (`xtask/src/guests/mod.rs`, `C_FLAGS`, and `-Werror`), made a checked
/// component by `cargo xtask componentize`. It asks for `asks`.
fn c_fetcher(dir: &std::path::Path, asks: &[String]) -> Vec<u8> {
    let example = "sdk/templates/c/http_example";
    let quoted: Vec<String> = asks.iter().map(|a| format!("{a:?}")).collect();
    let source = example_source(
        example,
        "fetcher.c",
        "static const char *const ASKS[] = {\"api.example.org:443\"};",
        &format!(
            "static const char *const ASKS[] = {{{}}};",
            quoted.join(", ")
        ),
        dir,
    );
    let gen_dir = dir.join("gen");
    let wit = support::repo_root().join(example).join("wit");
    run_step(
        "cargo xtask c-bindings",
        &mut xtask(&["c-bindings".as_ref(), wit.as_os_str(), gen_dir.as_os_str()]),
        "cargo xtask setup",
    );
    let core = gen_dir.join("core.wasm");
    run_step(
        "clang (wasm32-wasi)",
        wasi_clang()
            .args(["-Oz", "-flto", "-std=c17", "-Wall", "-Wextra", "-Werror"])
            .arg("-Wl,--strip-all")
            .arg("-I")
            .arg(&gen_dir)
            .arg("-o")
            .arg(&core)
            .arg(gen_dir.join("bot.c"))
            .arg(&source)
            .arg(gen_dir.join("bot_component_type.o")),
        "cargo xtask setup",
    );
    let out = dir.join("c-fetcher.wasm");
    // Also checks it imports only botbox:bot@0.2.0 and the wasi:http set.
    run_step(
        "cargo xtask componentize",
        &mut xtask(&["componentize".as_ref(), core.as_os_str(), out.as_os_str()]),
        "cargo xtask setup",
    );
    std::fs::read(&out).unwrap()
}

/// Loads `component` (built by `build` to ask for both servers) with a
/// grant for the first server only; the custom event `fetch` with a URL
/// must answer `answer` from the granted one (which serves `hello`), and
/// a reply starting with `refusal` for the other, which is never
/// connected to.
async fn assert_fetches_the_granted_host_only(
    build: impl FnOnce(&std::path::Path, &[String]) -> Vec<u8>,
    limits: &str,
    answer: &str,
    refusal: &str,
) {
    let granted = serve(Reply::Ok("hello")).await;
    let other = serve(Reply::Ok("other")).await;
    let dir = tempfile::tempdir().unwrap();
    let asks = [
        format!("127.0.0.1:{}", granted.port),
        format!("127.0.0.1:{}", other.port),
    ];
    let component = build(dir.path(), &asks);
    let host = TestHost::new(&[(
        "fetcher",
        component,
        &format!("{}\n{limits}", plain_loopback(granted.port)),
    )]);
    host.load_all().await;
    let plugin = host.app.runtime.plugin("fetcher").expect("fetcher loaded");
    let mut accepted = host.app.delivery.observers().accepted.subscribe();
    let fetch = |url: String| {
        Event::Custom(CustomEvent {
            name: "fetch".into(),
            payload: url,
        })
    };
    let text = |a: botbox::delivery::Accepted| match a.message.content {
        botbox::wit::types::Content::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    };

    host.app
        .runtime
        .dispatch("fetcher", &fetch(format!("http://{}/", asks[0])))
        .await
        .unwrap();
    assert_eq!(text(accepted.try_recv().expect("answered")), answer);
    assert_eq!(granted.connections.load(Ordering::SeqCst), 1);
    let stats = &plugin.context.slices.http.stats;
    assert_eq!(stats.completed.load(Ordering::Relaxed), 1);

    // Asked for, but not in the operator's grant.
    host.app
        .runtime
        .dispatch("fetcher", &fetch(format!("http://{}/", asks[1])))
        .await
        .unwrap();
    let refused = text(accepted.try_recv().expect("answered"));
    assert!(refused.starts_with(refusal), "{refused}");
    assert_eq!(other.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_reaches_a_granted_host_and_is_refused_elsewhere() {
    assert_fetches_the_granted_host_only(
        python_fetcher,
        // A Python heap starts at 12.4 MiB (plugins/README.md).
        "limits = { memory_mb = 32 }",
        "status 200: hello",
        "error ErrorCode_HttpRequestDenied",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_http_reaches_a_granted_host_and_is_refused_elsewhere() {
    assert_fetches_the_granted_host_only(
        c_fetcher,
        "",
        "status 200: hello",
        "error HttpRequestDenied",
    )
    .await;
}

#[test]
fn python_http_example_type_checks_against_its_bindings() {
    // The bindings componentize-py generates for the example's world, and
    // mypy (both from the venv `cargo xtask plugins` installs) run strict
    // on the example: the `wasi:http` calls match their generated types.
    let venv = support::target_dir().join("guests/python-venv/bin");
    for tool in ["componentize-py", "mypy"] {
        assert!(
            venv.join(tool).is_file(),
            "{} is missing: run `cargo xtask plugins` first (`cargo xtask test` does)",
            venv.join(tool).display()
        );
    }
    let example = support::repo_root().join("sdk/templates/python/http_example");
    let dir = tempfile::tempdir().unwrap();
    run_step(
        "componentize-py bindings",
        std::process::Command::new(venv.join("python"))
            .arg(venv.join("componentize-py"))
            .arg("--quiet")
            .arg("--wit-path")
            .arg(example.join("wit"))
            .args(["--world", "bot", "bindings"])
            .arg(dir.path()),
        "cargo xtask plugins",
    );
    let app = dir.path().join("app.py");
    std::fs::copy(example.join("app.py"), &app).unwrap();
    let mypy = |what: &str| {
        std::process::Command::new(venv.join("python"))
            .arg(venv.join("mypy"))
            .args(["--strict", "--no-incremental", "app.py"])
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("mypy does not run ({e}) on {what}"))
    };
    let out = mypy("the example");
    assert!(
        out.status.success(),
        "mypy on sdk/templates/python/http_example/app.py:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A wrongly typed wasi:http call is caught: the check has teeth.
    let text = std::fs::read_to_string(&app).unwrap();
    let right = "request.set_authority(parts.netloc)";
    assert!(text.contains(right), "the example no longer has `{right}`");
    std::fs::write(&app, text.replace(right, "request.set_authority(443)")).unwrap();
    let out = mypy("a wrongly typed call");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "mypy accepted an int authority:\n{said}"
    );
    assert!(said.contains("\"set_authority\""), "{said}");
}
