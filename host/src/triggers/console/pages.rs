//! The console's pages, as maud templates: every `(value)` splice is
//! HTML-escaped by maud, and every string a plugin, provider or webhook
//! caller could have chosen also goes through [`shown`], which escapes
//! control, format and separator characters and bounds its length.

use maud::{DOCTYPE, Markup, html};

use crate::delivery::EndpointsNow;
use crate::delivery::store::{ListedMessage, OutboxRecord, PartRecord};
use crate::delivery::throttle::LimitUsage;
use crate::runtime::plugin::Failure;
use crate::sanitize;
use crate::triggers::metrics::WebhookRefusal;

use super::tail::TailLine;

/// Longest string shown in a cell.
const MAX_SHOWN_CHARS: usize = 2000;

/// Hostile text made safe to show: control and invisible characters
/// escaped, cut at [`MAX_SHOWN_CHARS`]. maud escapes the markup.
pub fn shown(text: &str) -> String {
    sanitize::for_log(text, MAX_SHOWN_CHARS)
}

/// `text` as one URL path segment.
pub fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A Unix-ms time as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// How far `at_ms` is after `now_ms`, as `now` or `in 3.2 s`.
fn from_now(at_ms: u64, now_ms: u64) -> String {
    if at_ms <= now_ms {
        "now".into()
    } else {
        let ms = at_ms - now_ms;
        if ms < 120_000 {
            format!("in {:.1} s", ms as f64 / 1000.0)
        } else if ms < 7_200_000 {
            format!("in {} min", ms / 60_000)
        } else {
            format!("in {:.1} h", ms as f64 / 3_600_000.0)
        }
    }
}

/// The pages a logged-in operator moves between.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// `/console/plugins`.
    Plugins,
    /// `/console/outbox`.
    Outbox,
    /// `/console/endpoints`.
    Endpoints,
    /// `/console/webhooks`.
    Webhooks,
    /// `/console/logs`.
    Logs,
}

const TABS: [(Tab, &str, &str); 5] = [
    (Tab::Plugins, "/console/plugins", "Plugins"),
    (Tab::Outbox, "/console/outbox", "Outbox"),
    (Tab::Endpoints, "/console/endpoints", "Endpoints"),
    (Tab::Webhooks, "/console/webhooks", "Webhooks"),
    (Tab::Logs, "/console/logs", "Log tail"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { "botbox · " (title) }
            link rel="stylesheet" href="/console/static/console.css";
            // Its own icon, so a browser does not ask the API for
            // `/favicon.ico` (a refused call in the log) on every page.
            link rel="icon" type="image/svg+xml" href="/console/static/favicon.svg";
            script src="/console/static/console.js" defer {}
        }
    }
}

/// A logged-in page: the navigation, the logout button, `body`.
pub fn page(tab: Tab, csrf: &str, body: Markup) -> Markup {
    let title = TABS
        .iter()
        .find(|(t, _, _)| *t == tab)
        .map_or("console", |(_, _, name)| name);
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    span.brand { "botbox" }
                    nav {
                        @for (t, href, name) in TABS {
                            a href=(href) class=[(t == tab).then_some("current")] { (name) }
                        }
                    }
                    form.logout method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" id="logout" { "Log out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The login form, with `refusal` when a login was just refused.
pub fn login(refusal: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("log in"))
            body.login {
                main {
                    h1 { "botbox console" }
                    @if let Some(r) = refusal {
                        p.error id="login-error" role="alert" { (r) }
                    }
                    form method="post" action="/console/login" {
                        label for="token" { "Admin token (" code { "admin.token" } ")" }
                        input type="password" id="token" name="token" autocomplete="current-password" required;
                        button type="submit" id="login" { "Log in" }
                    }
                }
            }
        }
    }
}

/// A short page for a refused or failed action.
pub fn notice(title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.login { main { h1 { (title) } p.error id="notice" { (text) } p { a href="/console/plugins" { "Back to the console" } } } }
        }
    }
}

/// One plugin as the plugins page shows it.
pub struct PluginRow {
    /// Its name.
    pub name: String,
    /// What is known when it is loaded.
    pub loaded: Option<LoadedPlugin>,
}

/// A loaded plugin's figures.
pub struct LoadedPlugin {
    /// Its generation.
    pub generation: u64,
    /// Its manifest's version.
    pub version: Option<String>,
    /// Granted channels.
    pub channels: Vec<String>,
    /// Granted event kinds.
    pub events: Vec<&'static str>,
    /// Granted schedules.
    pub schedules: Vec<String>,
    /// `memory_mb`, `deadline_ms`, `max_concurrency`, `broadcasts_per_minute`.
    pub limits: Vec<(&'static str, String)>,
    /// handled, failed, traps, timeouts, out of memory, busy.
    pub counts: Vec<(&'static str, u64)>,
    /// The last failures, newest first.
    pub failures: Vec<Failure>,
}

/// The plugins page.
pub fn plugins(rows: &[PluginRow]) -> Markup {
    html! {
        h1 { "Plugins" }
        @if rows.is_empty() { p { "No plugin is configured." } }
        @for row in rows {
            section.plugin id=(format!("plugin-{}", segment(&row.name))) {
                h2 { (shown(&row.name)) " "
                    @match &row.loaded {
                        Some(_) => span.state.ok { "loaded" },
                        None => span.state.bad { "not loaded (the log says why)" },
                    }
                }
                @if let Some(p) = &row.loaded {
                    dl {
                        dt { "generation" } dd { (p.generation) }
                        dt { "version" } dd { (p.version.as_deref().map(shown).unwrap_or_else(|| "—".into())) }
                        dt { "channels" } dd { (p.channels.iter().map(|c| shown(c)).collect::<Vec<_>>().join(", ")) }
                        dt { "events" } dd { (p.events.join(", ")) }
                        dt { "schedules" } dd { (p.schedules.iter().map(|c| shown(c)).collect::<Vec<_>>().join(", ")) }
                        @for (name, value) in &p.limits { dt { "limits." (name) } dd { (value) } }
                    }
                    p.counts {
                        @for (name, n) in &p.counts { span.count { (name) ": " strong { (n) } } " " }
                    }
                    h3 { "Recent failures" }
                    @if p.failures.is_empty() {
                        p.none { "none" }
                    } @else {
                        table.failures {
                            thead { tr { th { "when (UTC)" } th { "kind" } th { "message" } } }
                            tbody {
                                @for f in &p.failures {
                                    tr.failure { td { (time(f.at_ms)) } td.kind { (f.kind) } td.message { (shown(&f.message)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The outbox filters, as asked.
#[derive(Default)]
pub struct OutboxFilter {
    /// `state`.
    pub state: String,
    /// `plugin`.
    pub plugin: String,
    /// `channel`.
    pub channel: String,
}

const STATES: [&str; 6] = [
    "queued",
    "sending",
    "delivered",
    "partial",
    "failed",
    "cancelled",
];

/// The outbox page: the filter form and the messages, newest first.
pub fn outbox(filter: &OutboxFilter, messages: &[ListedMessage], problem: Option<&str>) -> Markup {
    html! {
        h1 { "Outbox" }
        form.filters method="get" action="/console/outbox" {
            label { "state " select name="state" {
                option value="" selected[filter.state.is_empty()] { "any" }
                @for s in STATES { option value=(s) selected[filter.state == s] { (s) } }
            } }
            label { "plugin " input name="plugin" value=(shown(&filter.plugin)); }
            label { "channel " input name="channel" value=(shown(&filter.channel)); }
            button type="submit" { "Filter" }
        }
        @if let Some(p) = problem { p.error { (p) } }
        @if messages.is_empty() { p.none { "No message matches." } }
        @else {
            table.messages {
                thead { tr { th { "id" } th { "plugin" } th { "channel" } th { "state" } th { "attempts" } th { "requests" } th { "accepted (UTC)" } th { "last error" } } }
                tbody {
                    @for m in messages {
                        @let r = &m.record;
                        tr.message data-id=(shown(&r.id)) {
                            td { a href=(format!("/console/outbox/{}", segment(&r.id))) { (shown(&r.id)) } }
                            td { (shown(&r.plugin)) }
                            td { (shown(&r.channel)) }
                            td { span class=(format!("state state-{}", r.state.as_str())) { (r.state.as_str()) } }
                            td { (m.attempts) }
                            td { (m.requests()) }
                            td { (time(r.created_ms)) }
                            td.message { (r.last_error.as_deref().map(shown).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

/// One message: its parts, attempts, provider answers, and retry/cancel.
pub fn message(
    record: &OutboxRecord,
    parts: &[PartRecord],
    csrf: &str,
    done: Option<&str>,
) -> Markup {
    let id = segment(&record.id);
    html! {
        h1 { "Message " code { (shown(&record.id)) } }
        @if let Some(d) = done { p.done id="done" { (d) } }
        dl {
            dt { "state" } dd { span id="message-state" class=(format!("state state-{}", record.state.as_str())) { (record.state.as_str()) } }
            dt { "plugin" } dd { (shown(&record.plugin)) }
            dt { "channel" } dd { (shown(&record.channel)) }
            dt { "endpoint" } dd { (shown(&record.endpoint)) }
            dt { "provider requests (counted by the retry policy)" } dd id="message-attempts" { (record.attempts) }
            dt { "accepted (UTC)" } dd { (time(record.created_ms)) }
            dt { "finished (UTC)" } dd { (record.finished_ms.map(time).unwrap_or_else(|| "—".into())) }
            dt { "last provider answer" } dd id="message-error" { (record.last_error.as_deref().map(shown).unwrap_or_else(|| "—".into())) }
            dt { "content" } dd { pre { (shown(&crate::providers::console::content_line(&record.message.content))) } }
        }
        h2 { "Parts" }
        @if parts.is_empty() { p.none { "Not planned yet." } }
        @else {
            table.parts {
                thead { tr { th { "#" } th { "target" } th { "state" } th { "provider ids" } th { "provider answer" } } }
                tbody {
                    @for p in parts {
                        tr {
                            td { (p.index) }
                            td { (shown(&p.part.target)) }
                            td { (p.state.as_str()) }
                            td { (p.provider_ids.iter().map(|i| shown(i)).collect::<Vec<_>>().join(", ")) }
                            td { (p.last_error.as_deref().map(shown).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        div.actions {
            form method="post" action=(format!("/console/outbox/{id}/retry")) {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" id="retry" { "Retry" }
            }
            form method="post" action=(format!("/console/outbox/{id}/cancel")) {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" id="cancel" { "Cancel" }
            }
        }
        p { a href="/console/outbox" { "All messages" } }
    }
}

/// The endpoints page: each limit as a bar, the daily quotas, the queue
/// per plugin, the next slot and the last refusal.
pub fn endpoints(now: &EndpointsNow) -> Markup {
    let now_ms = now.now_ms;
    html! {
        h1 { "Endpoints" }
        @if now.endpoints.is_empty() { p.none { "No provider endpoint is configured." } }
        @for e in &now.endpoints {
            section.endpoint data-endpoint=(shown(&e.endpoint)) {
                h2 { (shown(&e.endpoint)) " " small { "(" (e.kind) ")" } }
                @if let Some(u) = &e.unreadable { p.error { "unreadable: " (shown(u)) } }
                table.limits {
                    thead { tr { th { "limit" } th { "use" } th { "" } th { "resets" } } }
                    tbody {
                        @for l in &e.limits { (limit_row(l, now_ms)) }
                    }
                }
                p { "next slot: " span.next-slot { (from_now(e.next_slot_ms, now_ms)) }
                    @if let Some(due) = e.next_due_ms { " · next message due " (from_now(due, now_ms)) } }
                h3 { "Queue per plugin" }
                @if e.queue.is_empty() { p.none.queue { "empty" } }
                @else {
                    table.queue {
                        thead { tr { th { "plugin" } th { "messages" } th { "requests" } } }
                        tbody { @for q in &e.queue { tr { td { (shown(&q.plugin)) } td { (q.messages) } td { (q.requests) } } } }
                    }
                }
                @if let Some(r) = &e.last_refusal {
                    p.refusal { "last refusal: " strong { (r.outcome) }
                        @if let Some(c) = &r.code { " " code { (shown(c)) } }
                        " — " (shown(&r.reason)) }
                }
            }
        }
    }
}

fn limit_row(l: &LimitUsage, now_ms: u64) -> Markup {
    let spelled = shown(&l.spelled());
    let daily = l.is_daily();
    let (used, max, figure, resets) = match l {
        LimitUsage::Window {
            limit,
            used,
            resets_at_ms,
            ..
        } => (
            f64::from(*used),
            f64::from(*limit),
            format!("{used} / {limit}"),
            resets_at_ms.map(|t| from_now(t, now_ms)),
        ),
        LimitUsage::PerDay {
            limit,
            used,
            resets_at_ms,
            ..
        } => (
            f64::from(*used),
            f64::from(*limit),
            format!("{used} / {limit}"),
            Some(from_now(*resets_at_ms, now_ms)),
        ),
        LimitUsage::Bucket {
            level,
            burst,
            empty_at_ms,
            ..
        } => (
            *level,
            f64::from(*burst),
            format!("{level:.1} / {burst}"),
            Some(from_now(*empty_at_ms, now_ms)),
        ),
        LimitUsage::Budget {
            seconds,
            spent_ms,
            resets_at_ms,
            ..
        } => (
            *spent_ms as f64 / 1000.0,
            f64::from(*seconds),
            format!("{:.1} s / {seconds} s", *spent_ms as f64 / 1000.0),
            resets_at_ms.map(|t| from_now(t, now_ms)),
        ),
    };
    html! {
        tr.limit class=[daily.then_some("daily")] data-limit=(spelled) {
            td { (spelled) @if daily { " " span.tag { "daily quota" } } }
            td.used { (figure) }
            td { meter min="0" max=(max) value=(used.min(max)) high=(max * 0.8) {} }
            td.resets { (resets.unwrap_or_else(|| "—".into())) }
        }
    }
}

/// The webhooks page: refusals counted by provider and reason, then the
/// recent ones, newest first.
pub fn webhooks(refusals: &[WebhookRefusal]) -> Markup {
    let mut counts: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for r in refusals {
        *counts.entry((r.provider.as_str(), r.outcome)).or_default() += 1;
    }
    html! {
        h1 { "Webhooks" }
        @if refusals.is_empty() { p.none { "No webhook call was refused since the host started." } }
        @else {
            h2 { "Refused, by provider and reason" }
            table.refusal-counts {
                thead { tr { th { "provider" } th { "reason" } th { "calls" } } }
                tbody { @for ((p, o), n) in &counts { tr { td { (shown(p)) } td { (o) } td { (n) } } } }
            }
            h2 { "Recent refusals" }
            table.refusals {
                thead { tr { th { "when (UTC)" } th { "provider" } th { "status" } th { "reason" } th { "detail" } } }
                tbody {
                    @for r in refusals.iter().rev() {
                        tr { td { (time(r.at_ms)) } td { (shown(&r.provider)) } td { (r.status) } td { (r.outcome) } td { (shown(&r.reason)) } }
                    }
                }
            }
        }
    }
}

/// The log tail: the recent lines; `console.js` appends new ones as they
/// come (as text, never as markup).
pub fn logs(lines: &[TailLine]) -> Markup {
    html! {
        h1 { "Log tail" }
        p { "Plugin log lines as they are written; the newest at the bottom. "
            span id="tail-status" { "connecting…" } }
        ol id="tail" data-stream="/console/logs/stream" {
            @for l in lines {
                li class=(format!("line level-{}", l.level)) {
                    span.level { (l.level) } " " span.plugin { (shown(&l.plugin)) } " " span.text { (shown(&l.message)) }
                }
            }
        }
    }
}
