// snprintf without stdio. wasi-libc's printf family links its stdio exit
// handlers, which import WASI (`fd_write`, `fd_seek`, `fd_close`); a botbox
// plugin imports nothing but the botbox interfaces, so it formats with this.
//
// Conversions: %s, %.*s (int length, then pointer), %c, %d, %u, %lld, %llu, %%.
// Always NUL-terminates when cap > 0; truncates to fit. Returns the length
// written.
#ifndef COUNTDOWN_FMT_H
#define COUNTDOWN_FMT_H

#include <stdarg.h>
#include <stddef.h>

__attribute__((format(printf, 3, 4)))
size_t fmt(char *out, size_t cap, const char *format, ...);
size_t vfmt(char *out, size_t cap, const char *format, va_list args);

#endif
