/* SPDX-License-Identifier: Apache-2.0 */
/*
 * servertext - see servertext.h.
 */
#include "servertext.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dicom/dataset.h"
#include "dicom/identity.h"
#include "dicom/redact.h"
#include "web/oauth.h"

/* The most of a Location header that is shown. */
#define SERVERTEXT_LOCATION_MAX 160

struct redact *servertext_for_entries(struct spool *spool,
                                      enum spool_state state,
                                      const char (*ids)[SPOOL_ID_MAX],
                                      size_t count, struct oauth_source *tokens,
                                      const char *token)
{
    struct redact *hide = redact_new();
    bool ok = hide != NULL;

    for (size_t i = 0; ok && i < count; i++) {
        char path[4096];
        struct ds *identity = NULL;
        int r;

        if (spool_entry_path(spool, state, ids[i], path, sizeof(path)) < 0)
            continue;
        r = identity_read_file(path, &identity);
        if (r == 0)
            ok = redact_add_dataset(hide, identity) == 0;
        else if (access(path, F_OK) == 0 || r == -ENOMEM)
            ok = false; /* there, but unknown: nothing may be shown */
        ds_free(identity);
    }
    if (ok && token != NULL)
        ok = redact_add_literal(hide, token) == 0;
    if (ok && tokens != NULL)
        ok = oauth_source_add_secrets(tokens, hide) == 0;
    if (!ok) {
        redact_free(hide);
        return NULL;
    }
    return hide;
}

void servertext_redirect(const struct redact *hide, long status,
                         const char *location, char *out, size_t len)
{
    char where[SERVERTEXT_LOCATION_MAX + 8];
    char base[SERVERTEXT_LOCATION_MAX + 8];
    char *studies;

    redact_text(hide, location, strlen(location), SERVERTEXT_LOCATION_MAX,
                where, sizeof(where));
    /* The DICOMweb root it points to: what comes before "/studies". */
    snprintf(base, sizeof(base), "%s", where);
    studies = strstr(base, "/studies");
    if (studies != NULL && strstr(base, "...") == NULL)
        *studies = '\0';
    else
        base[0] = '\0';
    snprintf(out, len,
             "HTTP %ld: upload.url should change%s%s%s: the server redirects "
             "to '%s'; redirects are never followed, so no token goes there",
             status, base[0] != '\0' ? " (to '" : "", base,
             base[0] != '\0' ? "'?)" : "",
             where[0] != '\0' ? where : "(no Location)");
}
