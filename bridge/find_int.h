/* SPDX-License-Identifier: Apache-2.0 */
/*
 * find_int - what the files of the C-FIND provider share, and nothing
 * else includes: find.c (sessions, paging, answers, patient grouping, the
 * real fetch) and find_plan.c (QIDO-RS planning per server profile).
 * Matching itself is match.h.
 *
 * Thread safety: reentrant. Errors: 0 or a negative errno.
 */
#ifndef STOWBRIDGE_BRIDGE_FIND_INT_H
#define STOWBRIDGE_BRIDGE_FIND_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "find.h"

struct ds;

/* The QueryRetrieveLevel (0008,0052) of a C-FIND. */
enum find_level {
    FIND_LEVEL_PATIENT = 0,
    FIND_LEVEL_STUDY,
    FIND_LEVEL_SERIES,
    FIND_LEVEL_IMAGE,
};

/* "PATIENT", "STUDY", "SERIES", "IMAGE", by enum find_level. */
extern const char *const find__level_names[4];

/* The level attribute @tag belongs to (PS3.4 C.6); unknown ones to
 * @query_level. */
enum find_level find__attr_level(uint32_t tag, enum find_level query_level);

/* What a C-FIND asks of the QIDO-RS server. */
struct find_plan {
    /* The resource and the parameters shared by every page (all but
     * limit and offset), percent-encoded; owned. */
    char *query_base;
    /* One per key of the identifier: the server is asked to match it
     * (or the resource path does); owned. */
    bool *server_matched;
    /* The unique key of the level: StudyInstanceUID (0020,000D),
     * SeriesInstanceUID (0020,000E) or SOPInstanceUID (0008,0018). */
    uint32_t unique_tag;
};

/*
 * Plans the QIDO-RS requests of the identifier @request at @query_level
 * for a server of @profile (see find_plan.c). @ret_plan is written only on
 * success. Returns 0, -ENOMEM, or -E2BIG (the URL would pass its ceiling,
 * QIDO_URL_MAX).
 */
int find__plan(const struct ds *request, enum find_level query_level,
               enum find_profile profile, struct find_plan *ret_plan);

/* Frees what find__plan() made. Accepts a zeroed plan. */
void find__plan_free(struct find_plan *plan);

#endif
