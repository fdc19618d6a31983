/* SPDX-License-Identifier: Apache-2.0 */
/*
 * redact - hides known values in text that came from outside (a server's
 * error body, an OAuth error_description, a Location header) before that
 * text is logged, kept in meta/ or printed.
 *
 * A struct redact is a set of values to hide: the secrets of the exchange
 * (client secret, static or bearer token) and the identifying values of
 * the instance or query it was about (names, IDs, birth date, accession
 * number). redact_text() copies a text with every occurrence of any of
 * them replaced by REDACT_MARK, on one line and cut to a length.
 *
 * Matching:
 *   - case-insensitive for ASCII letters and for the Latin-1 letters
 *     U+00C0..U+00DE / U+00E0..U+00FE (as UTF-8); other scripts byte for
 *     byte;
 *   - a value of REDACT_ANYWHERE_MIN bytes or more is hidden wherever it
 *     occurs, even inside a longer word; a shorter one only where it
 *     stands alone (no ASCII letter or digit next to it; a %XX, \uXXXX,
 *     \n, \r or \t escape in front counts as a separator), so that a
 *     patient ID "7" does not eat the digits of "AADSTS7000215";
 *   - every value is also hidden in the forms it travels in: percent-
 *     encoded (%XX, and '+' for a space) and JSON-escaped (\uXXXX, \", \\).
 *
 * What is added for DICOM values (redact_add_value(), by VR):
 *   PN  the whole value, each component group, each component (family,
 *       given, middle, prefix, suffix) and each word of a component on
 *       its own, so "DOE^JOHN" is hidden as "DOE^JOHN", "Doe John",
 *       "John Doe", "DOE, John"...;
 *   DA  YYYYMMDD and its usual renderings: 1965-04-12, 1965/04/12,
 *       1965.04.12, 12.04.1965, 12/04/1965, 04/12/1965, 12-04-1965,
 *       04-12-1965, the same unpadded (12.4.1965, 4/12/1965...), with a
 *       two-digit year (12.04.65, 04/12/65, 12/04/65), and with the month
 *       in English (12 Apr 1965, 12 April 1965, Apr 12, 1965, April 12,
 *       1965, 12-Apr-1965); a range "A-B" gives both dates;
 *   UI, CS, AE, AT, TM, numbers and binary VRs: nothing (UIDs, codes and
 *       numbers are no patient data and must stay readable);
 *   everything else (LO, SH, LT, ST, UT, UC, AS, DT...): the value, cut
 *       at the C-FIND wildcards '*' and '?' into the pieces between them.
 * Several values ('\'-separated) are added one by one, trimmed of spaces.
 * Values without any letter, digit or non-ASCII byte ("-", "^^") are not
 * added: they would hide punctuation only.
 *
 * Fail safe: a set that ran out of memory or past REDACT_MAX_VALUES
 * withholds every text instead of showing one that may still hold a value
 * it should have hidden, and redact_text() with a NULL set does the same
 * (so a failed redact_new() needs no special case). The add functions
 * return -ENOMEM/-E2BIG for the record; callers may ignore it.
 *
 * Ownership: values are copied and wiped when the set is freed (they may
 * be secrets). Never log what is added here.
 * Thread safety: a set belongs to one thread while it is built; after
 * that, redact_text() only reads it.
 */
#ifndef STOWBRIDGE_REDACT_H
#define STOWBRIDGE_REDACT_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ds;
struct redact;

/* What a hidden value becomes. */
#define REDACT_MARK "[redacted]"
/* What a withheld text becomes (see "Fail safe"). */
#define REDACT_WITHHELD "[server text withheld: it could not be checked]"
/* Values this long or longer are hidden even inside words. */
#define REDACT_ANYWHERE_MIN 4
/* The most values (each form counts) one set holds. */
#define REDACT_MAX_VALUES 4096
/* Longer values are hidden piece by piece, in pieces of this size. */
#define REDACT_VALUE_MAX 65536
/* How much of a server's text callers keep by default, in bytes. */
#define REDACT_TEXT_MAX 200

/* An empty set; NULL on out-of-memory. */
struct redact *redact_new(void);

/* Wipes the values and frees. Accepts NULL. */
void redact_free(struct redact *r);

/* Adds @value (trimmed of spaces) and its encoded forms. */
int redact_add_literal(struct redact *r, const char *value);

/* Adds a DICOM PN value: the whole, its groups, components and words. */
int redact_add_person_name(struct redact *r, const char *pn);

/* Adds a DICOM DA value (or range) in its usual renderings. */
int redact_add_date(struct redact *r, const char *da);

/* Adds @value (NULL: nothing) as the rules for VR @vr say (above). */
int redact_add_value(struct redact *r, const char *vr, const char *value);

/* Adds every value of @ds and of its sequence items, by VR. */
int redact_add_dataset(struct redact *r, const struct ds *ds);

/* Adds every value of @src (NULL: nothing) to @dst. */
int redact_merge(struct redact *dst, const struct redact *src);

/* Number of values held (each form counts). */
size_t redact_count(const struct redact *r);

/*
 * Writes into @out (capacity @out_size, always NUL-terminated) a one-line
 * copy of @text (@len bytes, NUL bytes allowed) with every value of @r
 * replaced by REDACT_MARK: control characters and runs of white space
 * become one space, '"' becomes '\'', invalid UTF-8 becomes '?', leading
 * and trailing spaces go; at most @max bytes (cut at a character, then
 * "..." is appended). @r NULL or failed: REDACT_WITHHELD. Returns the
 * length written.
 */
size_t redact_text(const struct redact *r, const char *text, size_t len,
                   size_t max, char *out, size_t out_size);

/* The same cleaning and cutting, for a text that holds nothing to hide
 * (our own, or an already redacted one). */
size_t redact_clean(const char *text, size_t len, size_t max, char *out,
                    size_t out_size);

#ifdef __cplusplus
}
#endif

#endif
