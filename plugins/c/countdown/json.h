// A small JSON reader for flat payloads and settings: find a key of the
// top-level object, read a string, an integer or an array of integers.
// Enough for `{"label": "Exam", "ticks": 5}` and `[10, 5, 1]`; it never
// allocates and never reads past `end`.
#ifndef COUNTDOWN_JSON_H
#define COUNTDOWN_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Where the value of `key` in the top-level object [json, end) starts, or
// NULL when the text is not an object or has no such key.
const char *json_find(const char *json, const char *end, const char *key);

// Decode the string value at `p` into `out` (NUL-terminated, at most
// `cap - 1` bytes). False when `p` is not a string or it does not fit.
bool json_string(const char *p, const char *end, char *out, size_t cap);

// Read the integer value at `p`. False when `p` is not an integer.
bool json_int(const char *p, const char *end, int64_t *out);

// Read an array of integers at `p` into `out` (at most `cap` of them);
// `*n` is how many. False when `p` is not such an array or it is too long.
bool json_int_array(const char *p, const char *end, int64_t *out, size_t cap, size_t *n);

#endif
