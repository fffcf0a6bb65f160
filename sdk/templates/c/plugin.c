// {{name}}: a botbox plugin. It greets people who say `!hello` in chat,
// answering in their conversation, and counts greetings in kv.
//
// Try it: `./build.sh`, then
// `botbox call {{name}}.wasm --event '{"name": "hello", "payload": "Ada"}'`.
//
// The bindings in gen/bot.h come from wit/bot.wit (world `bot`). Strings
// are `bot_string_t` (pointer and length, not NUL-terminated); options have
// `is_some`; variants have `tag` and `val`. Arguments of imports stay yours;
// whatever an import returns and the event `handle` receives are yours to
// free; what `describe` returns must be heap memory (the bindings free it).
//
// Do not use stdio (printf, snprintf): wasi-libc's stdio imports WASI, and a
// plugin may import only the botbox interfaces. The build refuses it.

#include <stdlib.h>
#include <string.h>

#include "bot.h"

static bot_string_t str(const char *s) {
    bot_string_t out;
    bot_string_set(&out, s);
    return out;
}

static bool fail(bot_string_t *err, const char *message) {
    bot_string_dup(err, message);
    return false;
}

// Appends [p, p + n) to buf (of size cap, holding *len bytes), truncating.
static void append(char *buf, size_t cap, size_t *len, const void *p, size_t n) {
    if (n > cap - 1 - *len) {
        n = cap - 1 - *len;
    }
    memcpy(buf + *len, p, n);
    *len += n;
    buf[*len] = '\0';
}

static void append_uint(char *buf, size_t cap, size_t *len, unsigned long long v) {
    char digits[24];
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    append(buf, cap, len, digits + sizeof digits - n, n);
}

// Counts one more greeting in kv; the new total, or 0 on error (in err).
static unsigned long long count_greeting(bot_string_t *err) {
    bot_string_t key = str("greeted");
    bot_option_list_u8_t stored;
    botbox_bot_kv_kv_error_t kv_err;
    unsigned long long count = 0;
    if (!botbox_bot_kv_get(&key, &stored, &kv_err)) {
        botbox_bot_kv_kv_error_free(&kv_err);
        fail(err, "kv get failed");
        return 0;
    }
    if (stored.is_some) {
        for (size_t i = 0; i < stored.val.len; i++) {
            count = count * 10 + (unsigned long long)(stored.val.ptr[i] - '0');
        }
        bot_option_list_u8_free(&stored);
    }
    count += 1;
    char text[24];
    size_t len = 0;
    append_uint(text, sizeof text, &len, count);
    bot_list_u8_t value = {(uint8_t *)text, len};
    if (!botbox_bot_kv_set(&key, &value, &kv_err)) {
        botbox_bot_kv_kv_error_free(&kv_err);
        fail(err, "kv set failed");
        return 0;
    }
    return count;
}

// Sends the greeting for `name` to `channel`, into `reply_to` when not NULL.
static bool greet(const bot_string_t *name, const bot_string_t *channel,
                  const bot_string_t *reply_to, bot_string_t *err) {
    unsigned long long count = count_greeting(err);
    if (count == 0) {
        return false;
    }
    // The `greeting` setting with {name} filled in, then the count.
    bot_string_t key = str("greeting");
    bot_string_t setting;
    bool has_setting = botbox_bot_settings_get(&key, &setting);
    const char *tmpl = "Hello, {name}!";
    size_t tmpl_len = strlen(tmpl);
    if (has_setting) {
        tmpl = (const char *)setting.ptr;
        tmpl_len = setting.len;
    }
    char text[1024];
    size_t len = 0;
    text[0] = '\0';
    for (size_t i = 0; i < tmpl_len;) {
        if (tmpl_len - i >= 6 && memcmp(tmpl + i, "{name}", 6) == 0) {
            append(text, sizeof text, &len, name->ptr, name->len);
            i += 6;
        } else {
            append(text, sizeof text, &len, tmpl + i, 1);
            i += 1;
        }
    }
    append(text, sizeof text, &len, " (greeting #", 12);
    append_uint(text, sizeof text, &len, count);
    append(text, sizeof text, &len, ")", 1);
    if (has_setting) {
        bot_string_free(&setting);
    }

    botbox_bot_types_message_t msg;
    memset(&msg, 0, sizeof msg);
    msg.channel = *channel;
    msg.content.tag = BOTBOX_BOT_TYPES_CONTENT_TEXT;
    msg.content.val.text = str(text);
    bot_string_t sender_key = str("sender");
    msg.sender.is_some = botbox_bot_settings_get(&sender_key, &msg.sender.val);
    if (reply_to) {
        msg.reply_to.is_some = true;
        msg.reply_to.val = *reply_to;
    }
    botbox_bot_types_receipt_t receipt;
    botbox_bot_types_broadcast_error_t send_err;
    bool sent = botbox_bot_broadcast_send_broadcast(&msg, &receipt, &send_err);
    if (msg.sender.is_some) {
        bot_string_free(&msg.sender.val);
    }
    if (!sent) {
        botbox_bot_types_broadcast_error_free(&send_err);
        return fail(err, "the channel refused the greeting");
    }
    botbox_bot_types_receipt_free(&receipt);
    return true;
}

static bool equals(const bot_string_t *s, const char *text) {
    return s->len == strlen(text) && memcmp(s->ptr, text, s->len) == 0;
}

// `s` without leading and trailing spaces (a view into the same bytes).
static bot_string_t trimmed(const bot_string_t *s) {
    bot_string_t out = *s;
    while (out.len > 0 && (out.ptr[0] == ' ' || out.ptr[0] == '\n' || out.ptr[0] == '\t')) {
        out.ptr++;
        out.len--;
    }
    while (out.len > 0 &&
           (out.ptr[out.len - 1] == ' ' || out.ptr[out.len - 1] == '\n' ||
            out.ptr[out.len - 1] == '\t')) {
        out.len--;
    }
    return out;
}

void exports_botbox_bot_handler_describe(exports_botbox_bot_handler_manifest_t *ret) {
    bot_string_dup(&ret->name, "{{name}}");
    bot_string_dup(&ret->version, "0.1.0");
    ret->channels.len = 1;
    ret->channels.ptr = malloc(sizeof(bot_string_t));
    bot_string_dup(&ret->channels.ptr[0], "lobby");
    ret->events.len = 2;
    ret->events.ptr = malloc(2 * sizeof(botbox_bot_types_event_kind_t));
    ret->events.ptr[0] = BOTBOX_BOT_TYPES_EVENT_KIND_CHAT_MESSAGE;
    ret->events.ptr[1] = BOTBOX_BOT_TYPES_EVENT_KIND_CUSTOM;
    ret->schedules.len = 0;
    ret->schedules.ptr = NULL;
}

bool exports_botbox_bot_handler_handle(exports_botbox_bot_handler_event_t *event,
                                       bot_string_t *err) {
    bool ok = true;
    if (event->tag == BOTBOX_BOT_TYPES_EVENT_CHAT_MESSAGE) {
        botbox_bot_types_chat_message_t *msg = &event->val.chat_message;
        bot_string_t text = trimmed(&msg->text);
        if (equals(&text, "!hello")) {
            const bot_string_t *name =
                msg->sender_name.is_some && msg->sender_name.val.len > 0 ? &msg->sender_name.val
                                                                          : &msg->sender_id;
            ok = greet(name, &msg->channel, &msg->conversation, err);
        }
    } else if (event->tag == BOTBOX_BOT_TYPES_EVENT_CUSTOM) {
        // `botbox call … --event '{"name": "hello", "payload": "Ada"}'`
        botbox_bot_types_custom_event_t *custom = &event->val.custom;
        if (!equals(&custom->name, "hello")) {
            ok = fail(err, "unknown event; this bot knows `hello`");
        } else {
            bot_string_t name = trimmed(&custom->payload);
            if (name.len == 0) {
                name = str("everyone");
            }
            bot_string_t lobby = str("lobby");
            ok = greet(&name, &lobby, NULL, err);
        }
    }
    exports_botbox_bot_handler_event_free(event);
    return ok;
}
