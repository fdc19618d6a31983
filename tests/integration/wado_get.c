/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wado_get - the WADO-RS reader (web/wado.h) as a command, for the
 * integration tests (wado_it.py): one retrieve into a sink over
 * OUT/tmp, with a consumer thread that plays the C-STORE side: it moves
 * each finished file to OUT/got/<part>.dcm, optionally waits a while per
 * file (a slow destination), and releases its bytes.
 *
 * usage: wado_get BASE_URL OUT STUDY [SERIES [INSTANCE]] [options]
 *   --budget BYTES   the sink's byte budget (default: none)
 *   --drain-ms MS    the consumer's time per file (default: 0)
 *   --ts UID         ask for this transfer syntax instead of *
 *   --bearer TOKEN   send it as the Authorization
 *   --stall S        the low-speed timeout (default: 20)
 * Prints one "file ..." line per part, then "content_type=...",
 * "result ..." and "rss_peak_kb=N" (VmHWM of this process); exits 0 on success,
 * 1 if the retrieve failed, 2 on bad usage.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "web/partfile.h"
#include "web/wado.h"

#define QUEUE_MAX 4096

struct queued {
    char *path;
    uint64_t size;
    unsigned index;
};

struct consumer {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct queued queue[QUEUE_MAX];
    unsigned head;
    unsigned tail;
    bool done;
    unsigned drain_ms;
    const char *got_dir;
    struct partfile_sink *sink;
    int failures;
};

static int on_file(void *ctx, const struct partfile_file *file, char *err,
                   size_t err_len)
{
    struct consumer *c = ctx;

    printf("file index=%u size=%llu type=%s ts=%s location=%s\n", file->index,
           (unsigned long long)file->size,
           file->content_type[0] != '\0' ? file->content_type : "-",
           file->transfer_syntax[0] != '\0' ? file->transfer_syntax : "-",
           file->content_location != NULL ? file->content_location : "-");
    fflush(stdout);
    pthread_mutex_lock(&c->lock);
    if (c->tail - c->head >= QUEUE_MAX) {
        pthread_mutex_unlock(&c->lock);
        snprintf(err, err_len, "consumer queue full");
        return -ENOBUFS;
    }
    struct queued *q = &c->queue[c->tail % QUEUE_MAX];
    q->path = strdup(file->path);
    q->size = file->size;
    q->index = file->index;
    if (q->path == NULL) {
        pthread_mutex_unlock(&c->lock);
        return -ENOMEM;
    }
    c->tail++;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static void *drain(void *arg)
{
    struct consumer *c = arg;
    char target[4096];

    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (c->head == c->tail && !c->done)
            pthread_cond_wait(&c->cond, &c->lock);
        if (c->head == c->tail)
            break;
        struct queued q = c->queue[c->head % QUEUE_MAX];
        c->head++;
        pthread_mutex_unlock(&c->lock);
        snprintf(target, sizeof(target), "%s/%u.dcm", c->got_dir, q.index);
        if (rename(q.path, target) < 0) {
            fprintf(stderr, "rename() '%s' failed: %s\n", q.path,
                    strerror(errno));
            c->failures++;
        }
        if (c->drain_ms > 0)
            usleep(c->drain_ms * 1000u);
        partfile_release(c->sink, q.size);
        free(q.path);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static long vm_hwm_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    }
    fclose(f);
    return kb;
}

int main(int argc, char **argv)
{
    struct wado_request req = { NULL, NULL, NULL, NULL, NULL, NULL, NULL };
    struct wado_params wp = { NULL, NULL, 10, 20 };
    struct partfile_params pp = { NULL, "wado", 0, on_file, NULL };
    struct consumer c;
    struct wado_result res;
    struct partfile_stats stats;
    const char *uids[3] = { NULL, NULL, NULL };
    unsigned nuids = 0;
    char tmp_dir[4096];
    char got_dir[4096];
    char err[512];
    pthread_t thread;

    memset(&c, 0, sizeof(c));
    if (argc < 4) {
        fprintf(stderr, "usage: wado_get BASE_URL OUT STUDY [SERIES "
                        "[INSTANCE]] [options]\n");
        return 2;
    }
    wp.base_url = argv[1];
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strncmp(a, "--", 2) != 0) {
            if (nuids == 3)
                return 2;
            uids[nuids++] = a;
            continue;
        }
        if (v == NULL)
            return 2;
        i++;
        if (strcmp(a, "--budget") == 0)
            pp.budget_bytes = strtoull(v, NULL, 10);
        else if (strcmp(a, "--drain-ms") == 0)
            c.drain_ms = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--ts") == 0)
            req.transfer_syntax = v;
        else if (strcmp(a, "--bearer") == 0)
            req.bearer = v;
        else if (strcmp(a, "--stall") == 0)
            wp.stall_timeout_s = (unsigned)strtoul(v, NULL, 10);
        else
            return 2;
    }
    req.study_uid = uids[0];
    req.series_uid = uids[1];
    req.instance_uid = uids[2];
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/tmp", argv[2]);
    snprintf(got_dir, sizeof(got_dir), "%s/got", argv[2]);
    (void)mkdir(argv[2], 0700);
    (void)mkdir(tmp_dir, 0700);
    (void)mkdir(got_dir, 0700);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    c.got_dir = got_dir;
    pp.dir = tmp_dir;
    pp.ctx = &c;
    if (partfile_new(&pp, &c.sink, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct wado_client *client = wado_client_new(&wp);
    if (client == NULL)
        return 1;
    pthread_create(&thread, NULL, drain, &c);

    int rc = wado_fetch(client, &req, c.sink, &res);

    pthread_mutex_lock(&c.lock);
    c.done = true;
    pthread_cond_broadcast(&c.cond);
    pthread_mutex_unlock(&c.lock);
    pthread_join(thread, NULL);
    partfile_get_stats(c.sink, &stats);
    printf("content_type=%s\n", res.content_type);
    printf("result rc=%d failure=%s status=%ld parts=%u bytes=%llu "
           "pauses=%u peak=%llu retry_after=%lld error=\"%s\"\n",
           rc, wado_failure_name(res.failure), res.http_status, res.parts,
           (unsigned long long)res.part_bytes, res.pauses,
           (unsigned long long)stats.peak_outstanding,
           (long long)res.retry_after_s, res.error);
    partfile_free(c.sink);
    wado_client_free(client);
    curl_global_cleanup();
    printf("rss_peak_kb=%ld\n", vm_hwm_kb());
    return rc == 0 && c.failures == 0 ? 0 : 1;
}
