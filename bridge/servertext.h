/* SPDX-License-Identifier: Apache-2.0 */
/*
 * servertext - what a DICOMweb server said about spool entries, made safe
 * to log, to keep in meta/ and to print (`queue list/show`): a server
 * echoes what it was sent, and that is patient data and tokens.
 *
 * servertext_for_entries() gathers what such a text must not show: each
 * entry's identifying values, read from its file (identity_read_file():
 * names, IDs, birth date, accession number...), the bearer token sent, and
 * every secret of the token source; redact_text() then hides them, cuts
 * the text to REDACT_TEXT_MAX bytes and keeps it on one line. Codes stay:
 * the HTTP status and Failure Reason are written by us around the text.
 *
 * Program code (bridge/). Thread safety: reentrant.
 */
#ifndef STOWBRIDGE_SERVERTEXT_H
#define STOWBRIDGE_SERVERTEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "spool/spool.h"

struct oauth_source;
struct redact;

/*
 * The values to hide in a server's text about the @count entries @ids in
 * @state, plus @token and the secrets of @tokens (both may be NULL). NULL
 * on out-of-memory, or when an entry's file exists but cannot be read:
 * then redact_text() withholds the text (fail safe); an entry whose file
 * is gone adds nothing. Free with redact_free().
 */
struct redact *servertext_for_entries(struct spool *spool,
                                      enum spool_state state,
                                      const char (*ids)[SPOOL_ID_MAX],
                                      size_t count, struct oauth_source *tokens,
                                      const char *token);

/*
 * Writes into @out why a @status redirect (3xx) to @location is not
 * followed: "HTTP 301: upload.url should change (to '<new base>'?): the
 * server redirects to '<Location>'; redirects are never followed, so no
 * token goes there", the most important first (meta/ keeps 255 bytes).
 * @location is cut to 160 bytes and hidden with @hide (NULL: withheld).
 */
void servertext_redirect(const struct redact *hide, long status,
                         const char *location, char *out, size_t len);

#endif
