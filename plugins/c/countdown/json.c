#include "json.h"

#include <string.h>

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

// Past the string starting at `p` (which is at its opening quote), or NULL.
static const char *skip_string(const char *p, const char *end) {
    if (p >= end || *p != '"') {
        return NULL;
    }
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

// Past the value starting at `p`, or NULL when it is malformed.
static const char *skip_value(const char *p, const char *end) {
    p = skip_ws(p, end);
    if (p >= end) {
        return NULL;
    }
    if (*p == '"') {
        return skip_string(p, end);
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                if (!p) {
                    return NULL;
                }
                continue;
            }
            if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) {
                    return p + 1;
                }
            }
            p++;
        }
        return NULL;
    }
    // A number or a literal: up to the next delimiter.
    const char *start = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\t' && *p != '\r') {
        p++;
    }
    return p > start ? p : NULL;
}

// Whether the string at `p` (at its quote, ending before `str_end`) equals
// `key`. Keys with escapes never match; ours have none.
static bool key_equals(const char *p, const char *str_end, const char *key) {
    size_t len = (size_t)(str_end - p) - 2;
    return len == strlen(key) && memcmp(p + 1, key, len) == 0;
}

const char *json_find(const char *json, const char *end, const char *key) {
    const char *p = skip_ws(json, end);
    if (p >= end || *p != '{') {
        return NULL;
    }
    p = skip_ws(p + 1, end);
    while (p < end && *p != '}') {
        const char *key_end = skip_string(p, end);
        if (!key_end) {
            return NULL;
        }
        const char *colon = skip_ws(key_end, end);
        if (colon >= end || *colon != ':') {
            return NULL;
        }
        const char *value = skip_ws(colon + 1, end);
        if (key_equals(p, key_end, key)) {
            return value;
        }
        p = skip_value(value, end);
        if (!p) {
            return NULL;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
        }
    }
    return NULL;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Append one code point as UTF-8; false when it does not fit.
static bool put_utf8(char *out, size_t cap, size_t *n, uint32_t cp) {
    char buf[4];
    size_t len;
    if (cp < 0x80) {
        buf[0] = (char)cp;
        len = 1;
    } else if (cp < 0x800) {
        buf[0] = (char)(0xC0 | (cp >> 6));
        buf[1] = (char)(0x80 | (cp & 0x3F));
        len = 2;
    } else if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | (cp >> 12));
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (char)(0x80 | (cp & 0x3F));
        len = 3;
    } else {
        buf[0] = (char)(0xF0 | (cp >> 18));
        buf[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        buf[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[3] = (char)(0x80 | (cp & 0x3F));
        len = 4;
    }
    if (*n + len >= cap) {
        return false;
    }
    memcpy(out + *n, buf, len);
    *n += len;
    return true;
}

static bool read_hex4(const char *p, const char *end, uint32_t *out) {
    if (end - p < 4) {
        return false;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(p[i]);
        if (d < 0) {
            return false;
        }
        v = v * 16 + (uint32_t)d;
    }
    *out = v;
    return true;
}

bool json_string(const char *p, const char *end, char *out, size_t cap) {
    if (!p || p >= end || *p != '"' || cap == 0) {
        return false;
    }
    size_t n = 0;
    for (p++; p < end; p++) {
        char c = *p;
        if (c == '"') {
            out[n] = '\0';
            return true;
        }
        if (c != '\\') {
            if (n + 1 >= cap) {
                return false;
            }
            out[n++] = c;
            continue;
        }
        if (++p >= end) {
            return false;
        }
        uint32_t cp;
        switch (*p) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (!read_hex4(p + 1, end, &cp)) {
                return false;
            }
            p += 4;
            // A surrogate pair: \uD83D\uDE00.
            if (cp >= 0xD800 && cp < 0xDC00) {
                uint32_t low;
                if (end - p < 7 || p[1] != '\\' || p[2] != 'u' || !read_hex4(p + 3, end, &low) ||
                    low < 0xDC00 || low >= 0xE000) {
                    return false;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
            break;
        default:
            return false;
        }
        if (!put_utf8(out, cap, &n, cp)) {
            return false;
        }
    }
    return false;
}

bool json_int(const char *p, const char *end, int64_t *out) {
    if (!p) {
        return false;
    }
    p = skip_ws(p, end);
    bool negative = false;
    if (p < end && *p == '-') {
        negative = true;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9') {
        return false;
    }
    int64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (v > (INT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (*p - '0');
        p++;
    }
    // 5.5 or 1e3 is not an integer.
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) {
        return false;
    }
    *out = negative ? -v : v;
    return true;
}

bool json_int_array(const char *p, const char *end, int64_t *out, size_t cap, size_t *n) {
    if (!p) {
        return false;
    }
    p = skip_ws(p, end);
    if (p >= end || *p != '[') {
        return false;
    }
    *n = 0;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']') {
        return true;
    }
    while (p < end) {
        if (*n >= cap || !json_int(p, end, &out[*n])) {
            return false;
        }
        (*n)++;
        p = skip_value(p, end);
        if (!p) {
            return false;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ']') {
            return true;
        }
        if (p >= end || *p != ',') {
            return false;
        }
        p = skip_ws(p + 1, end);
    }
    return false;
}
