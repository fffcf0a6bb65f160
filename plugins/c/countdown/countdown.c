// countdown: counts down to moments, announcing on a channel as the `tick`
// schedule fires. Time is counted in ticks; the operator sets the period
// and the bot's `unit` setting says what one tick is called.
//
// Custom events:  start {"label": "Exam", "ticks": 5}, cancel {"label": "Exam"},
//                 list, tick
// Schedule:       tick
// Chat:           !countdown  (answers in the conversation)
// kv:             cd/<label> = "<remaining> <serial>", next-serial, finished
//
// It imports only the botbox interfaces: no stdio, no clock, no WASI.

#include <stdarg.h>
#include "fmt.h"
#include <stdlib.h>
#include <string.h>

#include "bot.h"
#include "json.h"

#define MAX_LABEL 64
#define MAX_TEXT 512
#define MAX_ANNOUNCE_AT 32
#define KV_PREFIX "cd/"

// ---------------------------------------------------------------------------
// Small helpers over the generated bindings.

static bot_string_t str(const char *s) {
    bot_string_t out;
    bot_string_set(&out, s);
    return out;
}

__attribute__((format(printf, 2, 3)))
static void log_line(botbox_bot_log_level_t level, const char *format, ...) {
    char buf[MAX_TEXT];
    va_list args;
    va_start(args, format);
    vfmt(buf, sizeof buf, format, args);
    va_end(args);
    bot_string_t message = str(buf);
    botbox_bot_log_log(level, &message);
}

// The error `handle` returns: a heap string, freed by the bindings.
__attribute__((format(printf, 2, 3)))
static bool fail(bot_string_t *err, const char *format, ...) {
    char buf[MAX_TEXT];
    va_list args;
    va_start(args, format);
    vfmt(buf, sizeof buf, format, args);
    va_end(args);
    bot_string_dup(err, buf);
    return false;
}

// A setting copied into `out`; false when unset (or too long).
static bool setting(const char *key, char *out, size_t cap) {
    bot_string_t k = str(key);
    bot_string_t value;
    if (!botbox_bot_settings_get(&k, &value)) {
        return false;
    }
    bool fits = value.len < cap;
    if (fits) {
        memcpy(out, value.ptr, value.len);
        out[value.len] = '\0';
    }
    bot_string_free(&value);
    return fits;
}

static void setting_or(const char *key, const char *fallback, char *out, size_t cap) {
    if (!setting(key, out, cap)) {
        fmt(out, cap, "%s", fallback);
    }
}

static int64_t setting_int(const char *key, int64_t fallback, int64_t min, int64_t max) {
    char buf[32];
    int64_t v;
    if (!setting(key, buf, sizeof buf) || !json_int(buf, buf + strlen(buf), &v) || v < min ||
        v > max) {
        return fallback;
    }
    return v;
}

static const char *kv_error_text(const botbox_bot_kv_kv_error_t *e, char *buf, size_t cap) {
    switch (e->tag) {
    case BOTBOX_BOT_KV_KV_ERROR_KEY_TOO_LONG:
        fmt(buf, cap, "kv key longer than %u bytes", e->val.key_too_long);
        break;
    case BOTBOX_BOT_KV_KV_ERROR_VALUE_TOO_LARGE:
        fmt(buf, cap, "kv value larger than %u bytes", e->val.value_too_large);
        break;
    case BOTBOX_BOT_KV_KV_ERROR_QUOTA_EXCEEDED:
        fmt(buf, cap, "kv quota of %llu bytes exceeded",
                 (unsigned long long)e->val.quota_exceeded);
        break;
    default:
        fmt(buf, cap, "kv failed: %.*s", (int)e->val.internal.len,
                 (const char *)e->val.internal.ptr);
        break;
    }
    return buf;
}

// kv get as a NUL-terminated string. 1 found, 0 missing, -1 error (in err).
static int kv_get(const char *key, char *out, size_t cap, bot_string_t *err) {
    bot_string_t k = str(key);
    bot_option_list_u8_t value;
    botbox_bot_kv_kv_error_t e;
    if (!botbox_bot_kv_get(&k, &value, &e)) {
        char buf[128];
        fail(err, "%s", kv_error_text(&e, buf, sizeof buf));
        botbox_bot_kv_kv_error_free(&e);
        return -1;
    }
    if (!value.is_some) {
        return 0;
    }
    size_t n = value.val.len < cap - 1 ? value.val.len : cap - 1;
    memcpy(out, value.val.ptr, n);
    out[n] = '\0';
    bot_option_list_u8_free(&value);
    return 1;
}

static bool kv_set(const char *key, const char *text, bot_string_t *err) {
    bot_string_t k = str(key);
    bot_list_u8_t value = {(uint8_t *)text, strlen(text)};
    botbox_bot_kv_kv_error_t e;
    if (!botbox_bot_kv_set(&k, &value, &e)) {
        char buf[128];
        fail(err, "%s", kv_error_text(&e, buf, sizeof buf));
        botbox_bot_kv_kv_error_free(&e);
        return false;
    }
    return true;
}

static bool kv_delete(const char *key, bot_string_t *err) {
    bot_string_t k = str(key);
    botbox_bot_kv_kv_error_t e;
    if (!botbox_bot_kv_delete(&k, &e)) {
        char buf[128];
        fail(err, "%s", kv_error_text(&e, buf, sizeof buf));
        botbox_bot_kv_kv_error_free(&e);
        return false;
    }
    return true;
}

// Add `delta` to the decimal counter at `key`; the new value.
static int64_t kv_count(const char *key, int64_t delta, bot_string_t *err) {
    char buf[32];
    int64_t n = 0;
    int found = kv_get(key, buf, sizeof buf, err);
    if (found < 0) {
        return -1;
    }
    if (found == 1) {
        n = strtoll(buf, NULL, 10);
    }
    n += delta;
    fmt(buf, sizeof buf, "%lld", (long long)n);
    return kv_set(key, buf, err) ? n : -1;
}

// Send `text` to `channel`; `reply_to` and `idempotency_key` may be NULL.
static bool send(const char *channel, const char *text, const char *reply_to,
                 const char *idempotency_key, bot_string_t *err) {
    char sender[128];
    botbox_bot_types_message_t msg;
    memset(&msg, 0, sizeof msg);
    msg.channel = str(channel);
    msg.content.tag = BOTBOX_BOT_TYPES_CONTENT_TEXT;
    msg.content.val.text = str(text);
    if (setting("sender", sender, sizeof sender)) {
        msg.sender.is_some = true;
        msg.sender.val = str(sender);
    }
    if (reply_to) {
        msg.reply_to.is_some = true;
        msg.reply_to.val = str(reply_to);
    }
    if (idempotency_key) {
        msg.idempotency_key.is_some = true;
        msg.idempotency_key.val = str(idempotency_key);
    }
    botbox_bot_types_receipt_t receipt;
    botbox_bot_types_broadcast_error_t e;
    if (botbox_bot_broadcast_send_broadcast(&msg, &receipt, &e)) {
        botbox_bot_types_receipt_free(&receipt);
        return true;
    }
    switch (e.tag) {
    case BOTBOX_BOT_TYPES_BROADCAST_ERROR_QUOTA_EXHAUSTED:
        fail(err, "#%s: broadcast quota exhausted, resets in %llu ms", channel,
             (unsigned long long)e.val.quota_exhausted);
        break;
    case BOTBOX_BOT_TYPES_BROADCAST_ERROR_BACKLOG_FULL:
        fail(err, "#%s: backlog full", channel);
        break;
    default: {
        // Every other case carries a text.
        const bot_string_t *why = &e.val.not_granted;
        fail(err, "#%s refused the message: %.*s", channel, (int)why->len,
             (const char *)why->ptr);
        break;
    }
    }
    botbox_bot_types_broadcast_error_free(&e);
    return false;
}

// ---------------------------------------------------------------------------
// Countdowns.

static void announce_channel(char *out, size_t cap) {
    setting_or("channel", "announcements", out, cap);
}

// "Exam in 5 minutes." / "Exam in 1 minute." (unit is plural; a trailing
// `s` is dropped for 1).
static void remaining_text(const char *label, int64_t remaining, char *out, size_t cap) {
    char unit[64];
    setting_or("unit", "minutes", unit, sizeof unit);
    size_t len = strlen(unit);
    if (remaining == 1 && len > 1 && unit[len - 1] == 's') {
        unit[len - 1] = '\0';
    }
    fmt(out, cap, "%s in %lld %s.", label, (long long)remaining, unit);
}

// The `done` setting with every `{label}` replaced.
static void done_text(const char *label, char *out, size_t cap) {
    char tmpl[256];
    setting_or("done", "{label}: now!", tmpl, sizeof tmpl);
    size_t n = 0;
    for (const char *p = tmpl; *p && n + 1 < cap;) {
        if (strncmp(p, "{label}", 7) == 0) {
            n += (size_t)fmt(out + n, cap - n, "%s", label);
            if (n >= cap) {
                n = cap - 1;
            }
            p += 7;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
}

// Whether to post at `remaining`: the `announce-at` setting (a JSON array
// of counts) when set, otherwise at every tick.
static bool announces_at(int64_t remaining) {
    char text[256];
    int64_t at[MAX_ANNOUNCE_AT];
    size_t n;
    if (!setting("announce-at", text, sizeof text)) {
        return true;
    }
    if (!json_int_array(text, text + strlen(text), at, MAX_ANNOUNCE_AT, &n)) {
        log_line(BOTBOX_BOT_LOG_LEVEL_WARN,
                 "setting announce-at is not a JSON array of at most %d integers; announcing every tick",
                 MAX_ANNOUNCE_AT);
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (at[i] == remaining) {
            return true;
        }
    }
    return false;
}

static bool valid_label(const char *label) {
    size_t len = strlen(label);
    if (len == 0 || len > MAX_LABEL) {
        return false;
    }
    for (const char *p = label; *p; p++) {
        if ((unsigned char)*p < 0x20) {
            return false;
        }
    }
    return true;
}

static bool label_from_payload(const botbox_bot_types_custom_event_t *ev, char *label,
                               bot_string_t *err) {
    const char *json = (const char *)ev->payload.ptr;
    const char *end = json + ev->payload.len;
    if (!json_string(json_find(json, end, "label"), end, label, MAX_LABEL + 1) ||
        !valid_label(label)) {
        return fail(err, "`%.*s` needs a payload with a \"label\" of 1 to %d characters",
                    (int)ev->name.len, (const char *)ev->name.ptr, MAX_LABEL);
    }
    return true;
}

static bool start(const botbox_bot_types_custom_event_t *ev, bot_string_t *err) {
    char label[MAX_LABEL + 1];
    if (!label_from_payload(ev, label, err)) {
        return false;
    }
    const char *json = (const char *)ev->payload.ptr;
    const char *end = json + ev->payload.len;
    int64_t ticks;
    if (!json_int(json_find(json, end, "ticks"), end, &ticks) || ticks < 1 || ticks > 100000) {
        return fail(err, "`start` needs \"ticks\": a whole number from 1 to 100000");
    }
    char key[sizeof KV_PREFIX + MAX_LABEL];
    fmt(key, sizeof key, KV_PREFIX "%s", label);
    char existing[64];
    int found = kv_get(key, existing, sizeof existing, err);
    if (found < 0) {
        return false;
    }
    if (found == 0) {
        int64_t max = setting_int("max-countdowns", 10, 1, 1000);
        bot_string_t prefix = str(KV_PREFIX);
        bot_list_string_t keys;
        botbox_bot_kv_kv_error_t e;
        if (!botbox_bot_kv_list_keys(&prefix, (uint32_t)max, &keys, &e)) {
            char buf[128];
            fail(err, "%s", kv_error_text(&e, buf, sizeof buf));
            botbox_bot_kv_kv_error_free(&e);
            return false;
        }
        size_t running = keys.len;
        bot_list_string_free(&keys);
        if ((int64_t)running >= max) {
            return fail(err, "%lld countdowns are running already (setting max-countdowns)",
                        (long long)max);
        }
    }
    int64_t serial = kv_count("next-serial", 1, err);
    if (serial < 0) {
        return false;
    }
    char value[64];
    fmt(value, sizeof value, "%lld %lld", (long long)ticks, (long long)serial);
    if (!kv_set(key, value, err)) {
        return false;
    }
    char channel[128], text[MAX_TEXT], idem[64];
    announce_channel(channel, sizeof channel);
    remaining_text(label, ticks, text, sizeof text);
    fmt(idem, sizeof idem, "countdown-%lld-%lld", (long long)serial, (long long)ticks);
    log_line(BOTBOX_BOT_LOG_LEVEL_INFO, "started `%s`: %lld ticks%s", label, (long long)ticks,
             found == 1 ? " (restarted)" : "");
    return send(channel, text, NULL, idem, err);
}

static bool cancel(const botbox_bot_types_custom_event_t *ev, bot_string_t *err) {
    char label[MAX_LABEL + 1];
    if (!label_from_payload(ev, label, err)) {
        return false;
    }
    char key[sizeof KV_PREFIX + MAX_LABEL], value[64];
    fmt(key, sizeof key, KV_PREFIX "%s", label);
    int found = kv_get(key, value, sizeof value, err);
    if (found < 0) {
        return false;
    }
    if (found == 0) {
        return fail(err, "no countdown `%s` is running", label);
    }
    if (!kv_delete(key, err)) {
        return false;
    }
    char channel[128], text[MAX_TEXT];
    announce_channel(channel, sizeof channel);
    fmt(text, sizeof text, "%s: countdown cancelled.", label);
    return send(channel, text, NULL, NULL, err);
}

// Calls `visit` for each running countdown, in label order.
typedef bool (*visit_fn)(const char *label, int64_t remaining, int64_t serial, void *ctx,
                         bot_string_t *err);

static bool each_countdown(visit_fn visit, void *ctx, bot_string_t *err) {
    bot_string_t prefix = str(KV_PREFIX);
    bot_list_string_t keys;
    botbox_bot_kv_kv_error_t e;
    if (!botbox_bot_kv_list_keys(&prefix, 1000, &keys, &e)) {
        char buf[128];
        fail(err, "%s", kv_error_text(&e, buf, sizeof buf));
        botbox_bot_kv_kv_error_free(&e);
        return false;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < keys.len; i++) {
        char key[sizeof KV_PREFIX + MAX_LABEL + 1], value[64];
        size_t len = keys.ptr[i].len;
        if (len >= sizeof key) {
            continue;
        }
        memcpy(key, keys.ptr[i].ptr, len);
        key[len] = '\0';
        int found = kv_get(key, value, sizeof value, err);
        if (found < 0) {
            ok = false;
        } else if (found == 1) {
            char *rest;
            int64_t remaining = strtoll(value, &rest, 10);
            int64_t serial = strtoll(rest, NULL, 10);
            ok = visit(key + strlen(KV_PREFIX), remaining, serial, ctx, err);
        }
    }
    bot_list_string_free(&keys);
    return ok;
}

static bool tick_one(const char *label, int64_t remaining, int64_t serial, void *ctx,
                     bot_string_t *err) {
    const char *channel = ctx;
    char key[sizeof KV_PREFIX + MAX_LABEL], text[MAX_TEXT], idem[64];
    fmt(key, sizeof key, KV_PREFIX "%s", label);
    remaining -= 1;
    fmt(idem, sizeof idem, "countdown-%lld-%lld", (long long)serial, (long long)remaining);
    if (remaining <= 0) {
        done_text(label, text, sizeof text);
        if (!send(channel, text, NULL, idem, err) || !kv_delete(key, err)) {
            return false;
        }
        log_line(BOTBOX_BOT_LOG_LEVEL_INFO, "`%s` is done", label);
        return kv_count("finished", 1, err) >= 0;
    }
    char value[64];
    fmt(value, sizeof value, "%lld %lld", (long long)remaining, (long long)serial);
    if (!kv_set(key, value, err)) {
        return false;
    }
    if (!announces_at(remaining)) {
        return true;
    }
    remaining_text(label, remaining, text, sizeof text);
    return send(channel, text, NULL, idem, err);
}

static bool tick(bot_string_t *err) {
    char channel[128];
    announce_channel(channel, sizeof channel);
    return each_countdown(tick_one, channel, err);
}

struct summary {
    char text[MAX_TEXT];
    size_t len;
    int count;
};

static bool summarize_one(const char *label, int64_t remaining, int64_t serial, void *ctx,
                          bot_string_t *err) {
    (void)serial;
    (void)err;
    struct summary *s = ctx;
    char line[MAX_TEXT];
    remaining_text(label, remaining, line, sizeof line);
    if (s->len + strlen(line) + 2 < sizeof s->text) {
        s->len += (size_t)fmt(s->text + s->len, sizeof s->text - s->len, "%s%s",
                                   s->count ? " " : "", line);
    }
    s->count++;
    return true;
}

static bool summarize(struct summary *s, bot_string_t *err) {
    memset(s, 0, sizeof *s);
    if (!each_countdown(summarize_one, s, err)) {
        return false;
    }
    if (s->count == 0) {
        fmt(s->text, sizeof s->text, "No countdowns running.");
    }
    return true;
}

// ---------------------------------------------------------------------------
// Events.

static bool name_is(const bot_string_t *s, const char *name) {
    return s->len == strlen(name) && memcmp(s->ptr, name, s->len) == 0;
}

static bool on_custom(const botbox_bot_types_custom_event_t *ev, bot_string_t *err) {
    if (name_is(&ev->name, "start")) {
        return start(ev, err);
    }
    if (name_is(&ev->name, "cancel")) {
        return cancel(ev, err);
    }
    if (name_is(&ev->name, "tick")) {
        return tick(err);
    }
    if (name_is(&ev->name, "list")) {
        struct summary s;
        if (!summarize(&s, err)) {
            return false;
        }
        log_line(BOTBOX_BOT_LOG_LEVEL_INFO, "%s", s.text);
        return true;
    }
    return fail(err, "unknown event `%.*s`; this bot knows start, cancel, list and tick",
                (int)ev->name.len, (const char *)ev->name.ptr);
}

static bool on_chat(const botbox_bot_types_chat_message_t *msg, bot_string_t *err) {
    // Trim surrounding spaces; answer `!countdown` only.
    const char *p = (const char *)msg->text.ptr;
    const char *end = p + msg->text.len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n')) p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n')) end--;
    if ((size_t)(end - p) != strlen("!countdown") || memcmp(p, "!countdown", 10) != 0) {
        return true;
    }
    struct summary s;
    if (!summarize(&s, err)) {
        return false;
    }
    char channel[128], conversation[256], idem[160];
    if (msg->channel.len >= sizeof channel || msg->conversation.len >= sizeof conversation) {
        return fail(err, "channel or conversation name too long");
    }
    memcpy(channel, msg->channel.ptr, msg->channel.len);
    channel[msg->channel.len] = '\0';
    memcpy(conversation, msg->conversation.ptr, msg->conversation.len);
    conversation[msg->conversation.len] = '\0';
    const char *key = NULL;
    if (msg->message_id.is_some && msg->message_id.val.len < 100) {
        fmt(idem, sizeof idem, "reply-%.*s", (int)msg->message_id.val.len,
                 (const char *)msg->message_id.val.ptr);
        key = idem;
    }
    return send(channel, s.text, conversation, key, err);
}

// ---------------------------------------------------------------------------
// The exports.

static void list_of(bot_list_string_t *out, const char *const *items, size_t n) {
    out->len = n;
    out->ptr = malloc(n * sizeof *out->ptr);
    for (size_t i = 0; i < n; i++) {
        bot_string_dup(&out->ptr[i], items[i]);
    }
}

void exports_botbox_bot_handler_describe(exports_botbox_bot_handler_manifest_t *ret) {
    // Everything returned is freed by the bindings after the call: heap only.
    static const char *const channels[] = {"announcements", "lobby"};
    static const char *const schedules[] = {"tick"};
    static const botbox_bot_types_event_kind_t events[] = {
        BOTBOX_BOT_TYPES_EVENT_KIND_SCHEDULE,
        BOTBOX_BOT_TYPES_EVENT_KIND_CUSTOM,
        BOTBOX_BOT_TYPES_EVENT_KIND_CHAT_MESSAGE,
    };
    bot_string_dup(&ret->name, "countdown");
    bot_string_dup(&ret->version, "0.1.0");
    list_of(&ret->channels, channels, 2);
    list_of(&ret->schedules, schedules, 1);
    ret->events.len = 3;
    ret->events.ptr = malloc(sizeof events);
    memcpy(ret->events.ptr, events, sizeof events);
}

bool exports_botbox_bot_handler_handle(exports_botbox_bot_handler_event_t *event,
                                       bot_string_t *err) {
    bool ok = true;
    switch (event->tag) {
    case BOTBOX_BOT_TYPES_EVENT_SCHEDULE:
        if (name_is(&event->val.schedule, "tick")) {
            ok = tick(err);
        }
        break;
    case BOTBOX_BOT_TYPES_EVENT_CUSTOM:
        ok = on_custom(&event->val.custom, err);
        break;
    case BOTBOX_BOT_TYPES_EVENT_CHAT_MESSAGE:
        ok = on_chat(&event->val.chat_message, err);
        break;
    default:
        break;
    }
    // The event is ours to free.
    exports_botbox_bot_handler_event_free(event);
    return ok;
}
