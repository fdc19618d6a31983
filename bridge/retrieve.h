/* SPDX-License-Identifier: Apache-2.0 */
/*
 * retrieve - the C-MOVE and C-GET provider (scp.h, "C-MOVE and C-GET"):
 * answers a retrieve identifier from the DICOMweb server.
 *
 *   listing   (begin) QIDO-RS at instance level with
 *             includefield=00080016 (Azure returns only the SOP Instance
 *             UID by default) and the Study and Series UIDs, paged with
 *             limit <= 200 and offset until a page comes back short,
 *             de-duplicated by SOP Instance UID. Levels (PS3.4 C.4.2.2):
 *             PATIENT /instances?PatientID=; STUDY
 *             /studies/{s}/instances for each Study Instance UID; SERIES
 *             /studies/{s}/series/{se}/instances for each Series UID; IMAGE
 *             that series' listing kept to the SOP Instance UIDs asked.
 *             Zero matches: success with zero sub-operations.
 *   matching  the server's match is not trusted: every result is checked
 *             here before it becomes a sub-operation. Patient ID exact
 *             and case-sensitive after trimming spaces (PS3.4 C.2.2.2.1;
 *             Azure folds case), asked with includefield=00100020; Study
 *             and Series UIDs exact. Patient Root above PATIENT level: the
 *             identifier's Patient ID (if any) must be the instances' (an
 *             instance that lists none is left out), so another
 *             patient's study is zero sub-operations, as dcmqrdb answers
 *             (the spool's instances are checked alike). query.profile
 *             orthanc: a Patient ID with a character Orthanc cannot match
 *             exactly (find_plan.c's rule: anything but A-Z a-z 0-9 - . _
 *             ~ ^) is listed by a wildcard prefix up to it ("RT*"), or
 *             with no PatientID filter when it is the first.
 *             Not matching: left out, counted once in the log. Listed
 *             with an invalid Study or Series UID: a failed
 *             sub-operation; without a valid SOP Instance UID: logged.
 *   spool     instances still in our spool (incoming/, active/,
 *             deferred/: not delivered yet) that the identifier names are
 *             served from there (a hard link in the spool's tmp/), before
 *             anything the server lists under the same SOP Instance UID.
 *   fetching  one thread per operation: WADO-RS (wado.h) per series, or
 *             per instance at IMAGE level, with transfer-syntax=*, each
 *             part a file in the spool's tmp/ (partfile.h) within
 *             retrieve.max_temp_mb, handed to the association thread as
 *             soon as it is whole, so fetching and sending overlap. A 401
 *             gets a new token and one replay; a 403 logs the token's
 *             diagnosis. An instance listed but not received fails.
 *   limits    retrieve.max_parallel operations at once; one more is
 *             refused with A701 and an Error Comment (not queued).
 *   errors    a failed listing refuses the operation: C001 server
 *             unreachable, C002 HTTP error status, C003 answer not DICOM
 *             JSON, C004 no token; A900 for an identifier the level does
 *             not allow.
 *
 * The QIDO-RS request is a find_fetch_fn (find.h), so tests can play the
 * server. Pure parts (retrieve_plan()) are exposed for unit tests.
 *
 * Thread safety: a retrieve_service serves any number of associations
 * at once; a session belongs to one association thread (and its fetch
 * thread). Never logs patient data: counts, AE titles, statuses.
 */
#ifndef STOWBRIDGE_RETRIEVE_H
#define STOWBRIDGE_RETRIEVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "find.h"
#include "scp/scp.h"

struct ds;
struct oauth_source;
struct spool;

struct retrieve_params {
    struct spool *spool;     /* its tmp/ holds fetched files; borrowed */
    uint64_t max_temp_bytes; /* retrieve.max_temp_mb per operation */
    unsigned max_parallel;   /* retrieve.max_parallel */
    unsigned page_size;      /* QIDO-RS limit; 0 or > 200: 200 */
    /* query.profile orthanc: '^' of a Patient ID is sent raw (Orthanc
     * does not percent-decode QIDO-RS parameters). */
    bool qido_raw_caret;
    find_fetch_fn qido; /* QIDO-RS GET of a path and query */
    void *qido_ctx;
    const char *base_url;        /* WADO-RS root (upload.url) */
    const char *ca_file;         /* NULL: the system's */
    unsigned timeout_s;          /* WADO-RS connect and stall */
    struct oauth_source *tokens; /* NULL: no Authorization */
};

struct retrieve_service;

/* NULL on out-of-memory. Strings are borrowed and must outlive it. */
struct retrieve_service *retrieve_service_new(const struct retrieve_params *p);
void retrieve_service_free(struct retrieve_service *service);

/* The scp_retrieve_handler that answers with @service. */
void retrieve_handler_init(struct retrieve_service *service,
                           struct scp_retrieve_handler *ret_handler);

/* The QueryRetrieveLevel of a retrieve. */
enum retrieve_level {
    RETRIEVE_PATIENT = 0,
    RETRIEVE_STUDY,
    RETRIEVE_SERIES,
    RETRIEVE_IMAGE,
};

/* What a retrieve identifier asks for. */
struct retrieve_plan {
    enum retrieve_level level;
    /* PATIENT level; Patient Root above it, the identifier's if not
     * empty (one value); owned */
    char *patient_id;
    char **studies; /* STUDY: one or more; SERIES/IMAGE: exactly one */
    size_t study_count;
    char **series; /* SERIES: one or more; IMAGE: exactly one */
    size_t series_count;
    char **instances; /* IMAGE: one or more */
    size_t instance_count;
    /* The QIDO-RS resources to list, without query ("/studies/1.2/
     * instances", ...); owned. */
    char **resources;
    size_t resource_count;
};

/*
 * Plans the listing of @identifier for @model: checks the level and its
 * unique keys (PS3.4 C.4.2.2.1: a list of UIDs at the level asked, single
 * values above it, valid UIDs). Returns 0, -EINVAL with the reason in
 * @err (the caller answers A900), or -ENOMEM.
 */
int retrieve_plan(const struct ds *identifier, enum scp_find_model model,
                  struct retrieve_plan *ret_plan, char *err, size_t err_len);

/* Frees what retrieve_plan() made. Accepts a zeroed plan. */
void retrieve_plan_free(struct retrieve_plan *plan);

/* Number of operations running now (for tests). */
unsigned retrieve_service_running(struct retrieve_service *service);

#endif
