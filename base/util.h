/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util - small helpers shared by every module: validation of identifiers
 * that reach file names and logs, IPv4 networks, time, and careful I/O.
 *
 * Thread safety: every function is reentrant.
 * Errors: actions return 0 or a negative errno; predicates return bool.
 */
#ifndef STOWBRIDGE_UTIL_H
#define STOWBRIDGE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* DICOM limits (PS3.5 Table 6.2-1). */
#define UTIL_UID_MAX 64
#define UTIL_AE_TITLE_MAX 16

/* An IPv4 network in host byte order: matches when (ip & mask) == addr. */
struct util_ipv4_net {
    uint32_t addr;
    uint32_t mask;
};

/*
 * True if @uid is a valid UID (PS3.5 9.1): 1..64 characters, digits and
 * dots, no empty component, no leading zero in a multi-digit component.
 */
bool util_uid_valid(const char *uid);

/*
 * True if @ae is a valid AE title value after trimming spaces: 1..16
 * characters of the default repertoire, no backslash, no control
 * characters.
 */
bool util_ae_title_valid(const char *ae);

/*
 * Copies @src into @dst (capacity @dst_size) without leading and trailing
 * spaces. Returns 0, or -ENAMETOOLONG if it does not fit (dst is then "").
 */
int util_trim_copy(char *dst, size_t dst_size, const char *src);

/*
 * Parses "a.b.c.d" or "a.b.c.d/len" into @ret_net. Returns 0, or -EINVAL.
 * Host bits beyond the prefix are cleared.
 */
int util_ipv4_net_parse(const char *text, struct util_ipv4_net *ret_net);

/* True if dotted IPv4 address @ip lies inside @net; false if unparsable. */
bool util_ipv4_net_contains(const struct util_ipv4_net *net, const char *ip);

/* Monotonic clock in milliseconds. */
uint64_t util_now_monotonic_ms(void);

/* Wall clock in microseconds since the epoch. */
uint64_t util_now_realtime_us(void);

/* The absolute time @ms milliseconds from now on @clock (CLOCK_REALTIME,
 * CLOCK_MONOTONIC), normalised: the deadline pthread_cond_timedwait()
 * takes for a condition variable on that clock. */
void util_deadline_ms(clockid_t clock, uint64_t ms, struct timespec *ret);

/*
 * Fills @buf with @len bytes from the kernel's random source
 * (getrandom(2)). Returns 0 or a negative errno.
 */
int util_random_bytes(void *buf, size_t len);

/*
 * Length of the well-formed UTF-8 sequence at @p (1..4 bytes; 1 for
 * ASCII), or 0 for a byte that starts none: overlong forms, surrogates
 * and code points past U+10FFFF are not well-formed. A NUL ends the
 * sequence, so @p needs no length.
 */
size_t util_utf8_sequence(const unsigned char *p);

/* Formats -@neg_errno as text (thread-safe strerror). */
const char *util_strerror(int neg_errno, char *buf, size_t len);

/*
 * The one formatter of the optional "char *err, size_t err_len" reason
 * parameter (STYLE, Errors): printf-formats into @err, cut to fit and
 * NUL-terminated; does nothing when @err is NULL or @err_len is 0.
 */
void util_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif

#endif
