#include "fmt.h"

#include <stdbool.h>
#include <string.h>

struct sink {
    char *out;
    size_t cap;
    size_t len;
};

static void put(struct sink *s, const char *p, size_t n) {
    if (s->cap == 0) {
        return;
    }
    size_t room = s->cap - 1 - s->len;
    if (n > room) {
        n = room;
    }
    memcpy(s->out + s->len, p, n);
    s->len += n;
}

static void put_unsigned(struct sink *s, unsigned long long v, bool negative) {
    char digits[24];
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (negative) {
        digits[sizeof digits - 1 - n++] = '-';
    }
    put(s, digits + sizeof digits - n, n);
}

static void put_signed(struct sink *s, long long v) {
    // Negate in unsigned arithmetic so LLONG_MIN works.
    unsigned long long magnitude = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    put_unsigned(s, magnitude, v < 0);
}

size_t vfmt(char *out, size_t cap, const char *f, va_list args) {
    struct sink s = {out, cap, 0};
    while (*f) {
        if (*f != '%') {
            const char *next = strchr(f, '%');
            size_t n = next ? (size_t)(next - f) : strlen(f);
            put(&s, f, n);
            f += n;
            continue;
        }
        f++;
        if (*f == '%') {
            put(&s, "%", 1);
            f++;
        } else if (*f == 's') {
            const char *str = va_arg(args, const char *);
            put(&s, str ? str : "(null)", str ? strlen(str) : 6);
            f++;
        } else if (strncmp(f, ".*s", 3) == 0) {
            int n = va_arg(args, int);
            const char *str = va_arg(args, const char *);
            put(&s, str, n > 0 ? (size_t)n : 0);
            f += 3;
        } else if (*f == 'c') {
            char c = (char)va_arg(args, int);
            put(&s, &c, 1);
            f++;
        } else if (*f == 'd') {
            put_signed(&s, va_arg(args, int));
            f++;
        } else if (*f == 'u') {
            put_unsigned(&s, va_arg(args, unsigned), false);
            f++;
        } else if (strncmp(f, "lld", 3) == 0) {
            put_signed(&s, va_arg(args, long long));
            f += 3;
        } else if (strncmp(f, "llu", 3) == 0) {
            put_unsigned(&s, va_arg(args, unsigned long long), false);
            f += 3;
        } else {
            // Unknown conversion: print it as it is.
            put(&s, "%", 1);
        }
    }
    if (cap > 0) {
        out[s.len] = '\0';
    }
    return s.len;
}

size_t fmt(char *out, size_t cap, const char *format, ...) {
    va_list args;
    va_start(args, format);
    size_t n = vfmt(out, cap, format, args);
    va_end(args);
    return n;
}
