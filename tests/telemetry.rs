//! One message, traced end to end and exported over OTLP to a collector on
//! loopback: the admin call that continues an inbound `traceparent`, the
//! plugin's `handle`, `send-broadcast`, the outbox, the throttle, both
//! provider requests (the simulator refuses the first with a 502) and the
//! delivery report back to the plugin, all in one trace with the right
//! parents, and nothing in any span that names the provider's URL, a query,
//! a credential or the message. A signed webhook call continues its
//! caller's trace the same way, and a malformed `traceparent` starts a new
//! one.
//!
//! The test process puts the same layer the binary uses on its own
//! subscriber, and `[telemetry]` starts it as `botbox run` does.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use botbox::delivery::store::MessageState;
use botbox_sim::{Fault, SimProvider};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use support::host::Host;
use support::secrets::assert_no_secret;
use support::sims::{Setup, toml_str, windows_sim};
use support::{example_plugin, lock};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
/// The caller's trace, as a client would send it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const NOTICE: &str = "traced notice for the whole room";
/// A second caller's trace, continued by a signed webhook call.
const WEBHOOK_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const WEBHOOK_CALLER_SPAN: &str = "b7ad6b7169203331";
const TENCENT_CALLBACK_TOKEN: &str = "tencent-callback-token-for-traces";

/// Every span the collector received.
type Received = Arc<Mutex<Vec<Span>>>;

/// A collector's OTLP/HTTP trace endpoint, decoding with the protocol's
/// own protobuf types.
async fn collector() -> (String, Received, tokio::task::JoinHandle<()>) {
    async fn export(State(received): State<Received>, body: Bytes) -> Vec<u8> {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
        let mut spans = lock(&received);
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        ExportTraceServiceResponse::default().encode_to_vec()
    }
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, received, served)
}

/// The plugin log lines (target `plugin`) with their fields.
type Lines = Arc<Mutex<Vec<HashMap<String, String>>>>;

struct PluginLines(Lines);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PluginLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(HashMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name().into(), format!("{value:?}"));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().into(), value.into());
            }
        }
        let mut fields = Fields(HashMap::new());
        event.record(&mut fields);
        lock(&self.0).push(fields.0);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let kv = span.attributes.iter().find(|kv| kv.key == key)?;
    Some(match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_from_the_admin_call_to_its_delivery_report() {
    let lines: Lines = Arc::default();
    tracing_subscriber::registry()
        .with(botbox::telemetry::layer())
        .with(
            PluginLines(lines.clone()).with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.target() == "plugin"
            })),
        )
        .init();
    let (collector_url, received, served) = collector().await;

    let setup = Setup::start(windows_sim(), 5.0).await;
    let providers = setup.tencent("tc", &setup.cfg().tencent.secret_key.clone());
    let channels = "[channels.announcements]\nprovider = \"tc\"\nsender = \"news-bot\"\n";
    let token = setup.secret("admin-token", ADMIN_TOKEN);
    let callback_token = setup.secret("tencent-token", TENCENT_CALLBACK_TOKEN);
    let extra = format!(
        "[plugins.announcer]\npath = {}\nchannels = [\"announcements\"]\n\
         events = [\"custom\", \"delivery\"]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken = {token}\n\
         [webhooks]\nlisten = \"127.0.0.1:0\"\n\
         [providers.tc.inbound]\nsecret = {callback_token}\n\
         [telemetry]\notlp_endpoint = {}\nservice_name = \"botbox-test\"\n",
        toml_str(&example_plugin("announcer").display().to_string()),
        toml_str(&collector_url),
    );
    let host = Host::start_with(setup, &providers, channels, &[], &extra).await;
    let app = &host.app;
    let telemetry = botbox::telemetry::start(app.config.telemetry.as_ref().expect("[telemetry]"))
        .expect("the exporter starts");

    let stop = tokio_util::sync::CancellationToken::new();
    let reports = tokio::spawn(botbox::triggers::reports::run(
        app.delivery.clone(),
        app.runtime.clone(),
        stop.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", listener.local_addr().unwrap());
    let admin = Arc::new(botbox::triggers::admin::AdminServer::new(
        app.admin.clone().expect("[admin] is set"),
        app.config.plugins.keys().cloned().collect(),
        app.runtime.clone(),
        app.delivery.clone(),
        app.shared.metrics.clone(),
    ));
    let admin_served = tokio::spawn(admin.serve(listener, stop.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks_url = format!("http://{}", listener.local_addr().unwrap());
    let hooks = Arc::new(botbox::triggers::webhooks::WebhookServer::new(
        app.webhooks.clone().expect("[webhooks] is set"),
        &app.config,
        app.runtime.clone(),
        app.shared.replay.clone(),
        app.shared.metrics.clone(),
    ));
    let hooks_served = tokio::spawn(hooks.serve(listener, stop.clone()));
    let client = reqwest::Client::new();
    let emit = |body: String, traceparent: Option<String>| {
        let mut request = client
            .post(format!("{admin_url}/plugins/announcer/events"))
            .bearer_auth(ADMIN_TOKEN)
            .body(body);
        if let Some(value) = traceparent {
            request = request.header("traceparent", value);
        }
        async move {
            let answer = request.send().await.expect("admin answers");
            assert!(answer.status().is_success(), "{:?}", answer.text().await);
        }
    };

    // A malformed traceparent (uppercase) starts a trace of its own.
    emit(
        serde_json::json!({ "name": "add", "payload": { "text": NOTICE, "times": 1 } }).to_string(),
        Some(format!("00-{}-{CALLER_SPAN}-01", TRACE_ID.to_uppercase())),
    )
    .await;
    // The provider refuses the first request with a 502: retried.
    host.sim()
        .inject(SimProvider::Tencent, Fault::server_error(502), 1);
    let mut accepted = app.delivery.observers().accepted.subscribe();
    emit(
        r#"{"name": "tick"}"#.into(),
        Some(format!("00-{TRACE_ID}-{CALLER_SPAN}-01")),
    )
    .await;
    let receipt = accepted
        .try_recv()
        .expect("the tick posted the notice")
        .receipt
        .id;
    let (record, _) = host.done(&receipt).await;
    assert_eq!(record.state, MessageState::Delivered, "{record:?}");
    assert_eq!(record.attempts, 2, "{record:?}");
    // The report has reached the plugin once it is marked reported.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !app
        .delivery
        .outbox()
        .unreported_of("announcer", 10)
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the delivery report never reached announcer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A signed Tencent callback continues its caller's trace too.
    let callback = botbox_sim::callbacks::tencent_callback_url(
        &format!("{hooks_url}/webhooks/tc"),
        host.sim().config().tencent.sdkappid,
        "Group.CallbackAfterSendMsg",
        TENCENT_CALLBACK_TOKEN,
        botbox_sim::callbacks::unix_ms() / 1000,
    );
    let answer = client
        .post(callback)
        .header("content-type", "application/json")
        .header(
            "traceparent",
            format!("00-{WEBHOOK_TRACE_ID}-{WEBHOOK_CALLER_SPAN}-01"),
        )
        .body(
            botbox_sim::callbacks::tencent_group_message("@TGS#lobby", "ada", 11, "hello")
                .to_string(),
        )
        .send()
        .await
        .expect("webhook answers");
    assert!(answer.status().is_success(), "{:?}", answer.text().await);
    // Sends every batched span before looking.
    telemetry.shutdown().await;
    stop.cancel();
    reports.await.unwrap();
    admin_served.await.unwrap();
    hooks_served.await.unwrap();
    served.abort();

    let all = lock(&received).clone();
    let trace: Vec<&Span> = all
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    let by_id: HashMap<String, &Span> = trace.iter().map(|s| (hex(&s.span_id), *s)).collect();
    let one = |name: &str| -> &Span {
        let found: Vec<&&Span> = trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one `{name}` span in {names:?}");
        found[0]
    };
    let parent_of = |span: &Span| -> String { hex(&span.parent_span_id) };
    let parent_name = |span: &Span| -> &str {
        by_id
            .get(&parent_of(span))
            .map(|p| p.name.as_str())
            .unwrap_or("(outside the export)")
    };

    // The admin call continues the caller's span; the malformed one did not.
    let trigger = one("admin event");
    assert_eq!(parent_of(trigger), CALLER_SPAN);
    assert_eq!(attr(trigger, "plugin").as_deref(), Some("announcer"));
    let other_admin_calls = all
        .iter()
        .filter(|s| s.name == "admin event" && hex(&s.trace_id) != TRACE_ID)
        .count();
    assert_eq!(
        other_admin_calls, 1,
        "the `add` call has a trace of its own"
    );

    let handles: Vec<&&Span> = trace.iter().filter(|s| s.name == "handle").collect();
    assert_eq!(
        handles.len(),
        2,
        "the tick and the delivery report: {names:?}"
    );
    let tick = handles
        .iter()
        .find(|h| parent_of(h) == hex(&trigger.span_id))
        .expect("the tick's handle is a child of the admin call");
    let send = one("send-broadcast");
    assert_eq!(parent_of(send), hex(&tick.span_id));
    let accept = one("outbox accept");
    assert_eq!(parent_of(accept), hex(&send.span_id));
    assert_eq!(attr(accept, "receipt"), Some(receipt.clone()));

    // Two passes over the message (it was retried), each continuing the
    // stored trace, each with its throttle wait and its provider request.
    let passes: Vec<&&Span> = trace.iter().filter(|s| s.name == "deliver").collect();
    assert_eq!(passes.len(), 2, "{names:?}");
    for pass in &passes {
        assert_eq!(
            parent_of(pass),
            hex(&accept.span_id),
            "deliver under outbox accept"
        );
    }
    let mut requests: Vec<&&Span> = trace
        .iter()
        .filter(|s| s.name == "provider request")
        .collect();
    requests.sort_by_key(|s| attr(s, "attempt"));
    assert_eq!(requests.len(), 2, "{names:?}");
    for (request, (attempt, status)) in requests
        .iter()
        .zip([("1", "retry_later"), ("2", "delivered")])
    {
        assert_eq!(parent_name(request), "deliver");
        assert_eq!(attr(request, "attempt").as_deref(), Some(attempt));
        assert_eq!(attr(request, "status").as_deref(), Some(status));
        let endpoint = attr(request, "endpoint").unwrap_or_default();
        assert!(endpoint.starts_with("tc"), "{endpoint}");
        assert!(attr(request, "duration_ms").is_some(), "{request:?}");
    }
    let waits: Vec<&&Span> = trace.iter().filter(|s| s.name == "throttle wait").collect();
    assert_eq!(waits.len(), 2, "{names:?}");
    assert!(waits.iter().all(|w| parent_name(w) == "deliver"));

    // The report goes back to the plugin in the same trace.
    let report = one("delivery report");
    assert_eq!(parent_of(report), hex(&accept.span_id));
    assert!(
        handles.iter().any(|h| parent_of(h) == hex(&report.span_id)),
        "the report's handle is a child of the report"
    );

    // No span says where the provider is, what was asked or what was sent.
    let sim_urls: Vec<String> = SimProvider::ALL
        .iter()
        .map(|p| host.sim().url(*p))
        .collect();
    for span in &trace {
        for kv in &span.attributes {
            let value = attr(span, &kv.key).unwrap_or_default();
            for forbidden in
                sim_urls
                    .iter()
                    .map(String::as_str)
                    .chain(["http", "127.0.0.1", "?", NOTICE])
            {
                assert!(
                    !value.contains(forbidden),
                    "span `{}` attribute {} = {value:?} contains {forbidden:?}",
                    span.name,
                    kv.key
                );
            }
            assert_no_secret(
                &format!("span `{}` attribute {}", span.name, kv.key),
                &value,
            );
        }
    }

    let webhook = all
        .iter()
        .find(|s| s.name == "webhook")
        .expect("a webhook span");
    assert_eq!(hex(&webhook.trace_id), WEBHOOK_TRACE_ID);
    assert_eq!(hex(&webhook.parent_span_id), WEBHOOK_CALLER_SPAN);
    assert_eq!(attr(webhook, "provider").as_deref(), Some("tc"));

    // The plugin's own lines name the trace and the span they were written in.
    let posted = lock(&lines)
        .iter()
        .find(|l| {
            l.get("message")
                .is_some_and(|m| m.contains("posted notice"))
        })
        .cloned()
        .expect("announcer logged the post");
    assert_eq!(
        posted.get("trace_id").map(String::as_str),
        Some(TRACE_ID),
        "{posted:?}"
    );
    assert_eq!(
        posted.get("span_id"),
        Some(&hex(&tick.span_id)),
        "{posted:?}"
    );
}
