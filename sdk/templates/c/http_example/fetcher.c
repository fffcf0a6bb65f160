// An outbound-HTTP bot in C: on the custom event `fetch` it GETs the URL in
// the payload and sends `status N: BODY` (or `error ...`) to lobby.
//
// It targets `wit/world.wit`: the botbox:bot@0.2.0 contract plus
// `wasi:http/outgoing-handler`. Build it from this folder, with BOTBOX_DIR
// a botbox checkout (or `wit-bindgen c wit --world bot --out-dir gen` and
// `wasm-tools component new gen/core.wasm -o fetcher.wasm` for the two
// xtask steps):
//
//   xtask() { (cd "$BOTBOX_DIR" && cargo xtask "$@"); }
//   xtask c-bindings "$PWD/wit" "$PWD/gen"
//   clang --target=wasm32-wasi -mexec-model=reactor -Oz -std=c17 -I gen
//       -o gen/core.wasm gen/bot.c fetcher.c gen/bot_component_type.o
//   xtask componentize "$PWD/gen/core.wasm" "$PWD/fetcher.wasm"
//
// and grant its hosts in the operator's config:
//
//   [plugins.fetcher]
//   http = ["api.example.org:443"]
//
// A request to a host the operator did not grant is refused by the host
// before any connection: `wasi_http_outgoing_handler_handle` (or the
// response future) returns the error code HTTP_REQUEST_DENIED, which this
// bot reports as `error HttpRequestDenied`.
//
// The calls follow the `wasi:http@0.2` WIT (tests/wit/wasi-0.2.12/http.wit):
// build an `outgoing-request`, `handle` it, block on the
// `future-incoming-response`'s pollable until `get` answers, then
// `consume` the response and `blocking-read` its body stream. The names
// are the ones `wit-bindgen c` (0.60) gives them: `wasi_http_types_method_*`
// for methods, `*_drop_own` for dropping an owned handle, `bool` results
// with an `err` out-parameter for `result`s. As in the template, no stdio:
// a plugin imports only botbox and the wasi:http interfaces.

#include <stdlib.h>
#include <string.h>

#include "bot.h"

// The hosts this bot asks for in describe(); the operator grants some of
// them. The test that builds this file replaces the list (it serves on
// loopback).
static const char *const ASKS[] = {"api.example.org:443"};
// At most this much of a body is kept: the reply is a chat message.
#define MAX_BODY_BYTES 1024
#define READ_CHUNK (16 * 1024)

// A text being built, truncated at its capacity.
typedef struct {
    char buf[MAX_BODY_BYTES + 256];
    size_t len;
} text_t;

static void append(text_t *t, const void *p, size_t n) {
    size_t room = sizeof t->buf - 1 - t->len;
    if (n > room) {
        n = room;
    }
    memcpy(t->buf + t->len, p, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void append_str(text_t *t, const char *s) { append(t, s, strlen(s)); }

// Appends body bytes as printable ASCII, every other byte as '?': a chat
// message is UTF-8 text, and a body is whatever the server sent (a cut at
// the cap could also split a UTF-8 sequence).
static void append_printable(text_t *t, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
        append(t, &c, 1);
    }
}

static void append_uint(text_t *t, unsigned long v) {
    char digits[24];
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    append(t, digits + sizeof digits - n, n);
}

// A readable name for the error codes a bot is likely to meet.
static void append_error_code(text_t *t, const wasi_http_types_error_code_t *code) {
    switch (code->tag) {
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED:
        append_str(t, "HttpRequestDenied");
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_DESTINATION_IP_PROHIBITED:
        append_str(t, "DestinationIpProhibited");
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_REFUSED:
        append_str(t, "ConnectionRefused");
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_CONNECTION_LIMIT_REACHED:
        append_str(t, "ConnectionLimitReached");
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_TIMEOUT:
        append_str(t, "HttpResponseTimeout");
        break;
    case WASI_HTTP_TYPES_ERROR_CODE_HTTP_RESPONSE_BODY_SIZE:
        append_str(t, "HttpResponseBodySize");
        break;
    default:
        append_str(t, "error-code ");
        append_uint(t, code->tag);
    }
}

// Splits `http[s]://authority/path?query` into its parts (views into url).
// False when it is not such a URL.
static bool split_url(bot_string_t url, bool *https, bot_string_t *authority,
                      bot_string_t *path) {
    const char *p = (const char *)url.ptr;
    size_t n = url.len;
    size_t skip;
    if (n >= 8 && memcmp(p, "https://", 8) == 0) {
        *https = true;
        skip = 8;
    } else if (n >= 7 && memcmp(p, "http://", 7) == 0) {
        *https = false;
        skip = 7;
    } else {
        return false;
    }
    size_t end = skip;
    while (end < n && p[end] != '/' && p[end] != '?' && p[end] != '#') {
        end++;
    }
    if (end == skip) {
        return false;
    }
    authority->ptr = url.ptr + skip;
    authority->len = end - skip;
    size_t stop = end;
    while (stop < n && p[stop] != '#') {
        stop++;
    }
    path->ptr = url.ptr + end;
    path->len = stop - end;
    return true;
}

// GETs `url` and writes `status N: BODY` or `error ...` into `out`.
static void fetch(bot_string_t url, text_t *out) {
    bool https;
    bot_string_t authority, path;
    if (!split_url(url, &https, &authority, &path)) {
        append_str(out, "error not an http(s) URL");
        return;
    }
    // wasi:http builds no URI without a path.
    bot_string_t slash;
    bot_string_set(&slash, "/");
    if (path.len == 0) {
        path = slash;
    }
    wasi_http_types_own_outgoing_request_t request =
        wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_request_t req = wasi_http_types_borrow_outgoing_request(request);
    wasi_http_types_method_t method = {.tag = WASI_HTTP_TYPES_METHOD_GET};
    wasi_http_types_scheme_t scheme = {
        .tag = https ? WASI_HTTP_TYPES_SCHEME_HTTPS : WASI_HTTP_TYPES_SCHEME_HTTP};
    if (!wasi_http_types_method_outgoing_request_set_method(req, &method) ||
        !wasi_http_types_method_outgoing_request_set_scheme(req, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(req, &authority) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(req, &path)) {
        wasi_http_types_outgoing_request_drop_own(request);
        append_str(out, "error the URL has an invalid part");
        return;
    }

    // The host checks the grant here (or when the future resolves): an
    // ungranted host is HTTP_REQUEST_DENIED. `handle` takes the request.
    wasi_http_types_own_future_incoming_response_t future;
    wasi_http_types_error_code_t code;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &future, &code)) {
        append_str(out, "error ");
        append_error_code(out, &code);
        wasi_http_types_error_code_free(&code);
        return;
    }
    wasi_http_types_borrow_future_incoming_response_t fut =
        wasi_http_types_borrow_future_incoming_response(future);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t answer;
    while (!wasi_http_types_method_future_incoming_response_get(fut, &answer)) {
        // Not ready: wait on its pollable, then drop that (a child of the
        // future, so before it).
        wasi_http_types_own_pollable_t ready =
            wasi_http_types_method_future_incoming_response_subscribe(fut);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
        wasi_io_poll_pollable_drop_own(ready);
    }
    wasi_http_types_future_incoming_response_drop_own(future);
    if (answer.is_err) {
        append_str(out, "error the response was already taken");
        return;
    }
    if (answer.val.ok.is_err) {
        // err(error-code): refused by the host or failed on the wire.
        append_str(out, "error ");
        append_error_code(out, &answer.val.ok.val.err);
        wasi_http_types_error_code_free(&answer.val.ok.val.err);
        return;
    }
    wasi_http_types_own_incoming_response_t response = answer.val.ok.val.ok;
    wasi_http_types_borrow_incoming_response_t resp =
        wasi_http_types_borrow_incoming_response(response);
    append_str(out, "status ");
    append_uint(out, wasi_http_types_method_incoming_response_status(resp));
    append_str(out, ": ");

    wasi_http_types_own_incoming_body_t body;
    if (!wasi_http_types_method_incoming_response_consume(resp, &body)) {
        wasi_http_types_incoming_response_drop_own(response);
        return;
    }
    wasi_http_types_own_input_stream_t stream;
    if (wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body),
                                                    &stream)) {
        wasi_io_streams_borrow_input_stream_t in = wasi_io_streams_borrow_input_stream(stream);
        size_t kept = 0;
        // Read up to the cap; `blocking-read` waits for bytes, and the
        // stream says `closed` at the end of the body.
        while (kept < MAX_BODY_BYTES) {
            bot_list_u8_t chunk;
            wasi_io_streams_stream_error_t err;
            if (!wasi_io_streams_method_input_stream_blocking_read(in, READ_CHUNK, &chunk, &err)) {
                if (err.tag != WASI_IO_STREAMS_STREAM_ERROR_CLOSED) {
                    out->len = 0;
                    append_str(out, "error the body was cut");
                }
                wasi_io_streams_stream_error_free(&err);
                break;
            }
            size_t take = chunk.len < MAX_BODY_BYTES - kept ? chunk.len : MAX_BODY_BYTES - kept;
            append_printable(out, chunk.ptr, take);
            kept += take;
            bot_list_u8_free(&chunk);
        }
        // Children before their parents: the stream, the body, the response.
        wasi_io_streams_input_stream_drop_own(stream);
    }
    wasi_http_types_incoming_body_drop_own(body);
    wasi_http_types_incoming_response_drop_own(response);
}

static void say(const text_t *text) {
    botbox_bot_types_message_t msg;
    memset(&msg, 0, sizeof msg);
    bot_string_set(&msg.channel, "lobby");
    msg.content.tag = BOTBOX_BOT_TYPES_CONTENT_TEXT;
    bot_string_set(&msg.content.val.text, text->buf);
    botbox_bot_types_receipt_t receipt;
    botbox_bot_types_broadcast_error_t send_err;
    if (botbox_bot_broadcast_send_broadcast(&msg, &receipt, &send_err)) {
        botbox_bot_types_receipt_free(&receipt);
    } else {
        botbox_bot_types_broadcast_error_free(&send_err);
    }
}

static bool equals(const bot_string_t *s, const char *text) {
    return s->len == strlen(text) && memcmp(s->ptr, text, s->len) == 0;
}

void exports_botbox_bot_handler_describe(exports_botbox_bot_handler_manifest_t *ret) {
    // What describe returns must be heap memory: the bindings free it.
    bot_string_dup(&ret->name, "fetcher");
    bot_string_dup(&ret->version, "0.2.0");
    ret->channels.len = 1;
    ret->channels.ptr = malloc(sizeof(bot_string_t));
    bot_string_dup(&ret->channels.ptr[0], "lobby");
    ret->events.len = 1;
    ret->events.ptr = malloc(sizeof(botbox_bot_types_event_kind_t));
    ret->events.ptr[0] = BOTBOX_BOT_TYPES_EVENT_KIND_CUSTOM;
    ret->schedules.len = 0;
    ret->schedules.ptr = NULL;
    size_t asks = sizeof ASKS / sizeof ASKS[0];
    ret->http.len = asks;
    ret->http.ptr = malloc(asks * sizeof(bot_string_t));
    for (size_t i = 0; i < asks; i++) {
        bot_string_dup(&ret->http.ptr[i], ASKS[i]);
    }
}

bool exports_botbox_bot_handler_handle(exports_botbox_bot_handler_event_t *event,
                                       bot_string_t *err) {
    (void)err;
    if (event->tag == BOTBOX_BOT_TYPES_EVENT_CUSTOM && equals(&event->val.custom.name, "fetch")) {
        text_t text = {.len = 0};
        text.buf[0] = '\0';
        fetch(event->val.custom.payload, &text);
        say(&text);
    }
    exports_botbox_bot_handler_event_free(event);
    return true;
}
