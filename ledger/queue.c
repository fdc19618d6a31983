/* SPDX-License-Identifier: Apache-2.0 */
/*
 * queue - the asynchronous side of the ledger: the record calls copy their
 * arguments into one allocation and append it to a bounded ring under
 * lg->qlock (tail drop when full); one writer thread takes up to
 * params.group_max entries at a time and commits them in one transaction
 * (write.c), running one prune chunk between groups when a prune is asked.
 */
#include "ledger.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ledger_int.h"

/* Monotonic clock in milliseconds. */
static uint64_t ledger__mono_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The CLOCK_MONOTONIC time @ms milliseconds from the monotonic @base_ms. */
static struct timespec ledger__deadline(uint64_t base_ms, uint64_t ms)
{
    uint64_t at = base_ms + ms;
    struct timespec ts;

    ts.tv_sec = (time_t)(at / 1000u);
    ts.tv_nsec = (long)(at % 1000u) * 1000000L;
    return ts;
}

/* True if @s is NULL (when allowed) or at most @max characters. */
static bool ledger__str_ok(const char *s, size_t max, bool required)
{
    size_t n;

    if (s == NULL)
        return !required;
    n = strnlen(s, max + 1);
    return n <= max && (!required || n > 0);
}

/* Bytes a string takes in an entry (NULL is stored as ""). */
static size_t ledger__str_size(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 1;
}

/* Copies @s (NULL as "") to *@pos and advances it; returns the copy. */
static const char *ledger__put(char **pos, const char *s)
{
    size_t n = ledger__str_size(s);
    char *copy = *pos;

    if (s != NULL)
        memcpy(copy, s, n);
    else
        copy[0] = '\0';
    *pos += n;
    return copy;
}

/* Allocates an entry of @size bytes (struct first); NULL on ENOMEM. */
static struct ledger__entry *ledger__entry_new(enum ledger__kind kind,
                                               size_t size)
{
    struct ledger__entry *e = malloc(size);

    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->size = size;
    return e;
}

/* Checks the handle for a write call. */
static int ledger__writable(const struct ledger *lg)
{
    if (lg == NULL)
        return -ENODEV;
    return lg->readonly ? -EROFS : 0;
}

/*
 * Appends @e to the queue, or frees it and counts a drop when the queue is
 * full (entries or bytes). Never waits for anything but the mutex.
 */
static int ledger__enqueue(struct ledger *lg, struct ledger__entry *e)
{
    int r = 0;

    (void)pthread_mutex_lock(&lg->qlock);
    if (lg->stop) {
        r = -ENODEV;
    } else if (lg->count == lg->p.queue_max ||
               e->size > lg->p.queue_bytes_max - lg->stats.queue_bytes) {
        lg->stats.dropped++;
        r = -ENOBUFS;
    } else {
        lg->ring[(lg->head + lg->count) % lg->p.queue_max] = e;
        lg->count++;
        lg->stats.queue_bytes += e->size;
        lg->seq_queued++;
        lg->stats.queued++;
        if (lg->count > lg->stats.queue_high_water)
            lg->stats.queue_high_water = lg->count;
        if (lg->count == 1) {
            lg->first_queued_ms = ledger__mono_ms();
            (void)pthread_cond_signal(&lg->work);
        } else if (lg->count == lg->p.group_max) {
            (void)pthread_cond_signal(&lg->work);
        }
    }
    (void)pthread_mutex_unlock(&lg->qlock);
    if (r < 0)
        free(e);
    return r;
}

int ledger_record_delivery(struct ledger *lg, const struct ledger_delivery *d)
{
    struct ledger__entry *e;
    size_t size;
    char *pos;
    int r = ledger__writable(lg);

    if (r < 0)
        return r;
    if (d == NULL ||
        !ledger__str_ok(d->sop_instance_uid, LEDGER_UID_MAX, true) ||
        !ledger__str_ok(d->sop_class_uid, LEDGER_UID_MAX, false) ||
        !ledger__str_ok(d->study_uid, LEDGER_UID_MAX, false) ||
        !ledger__str_ok(d->series_uid, LEDGER_UID_MAX, false) ||
        !ledger__str_ok(d->calling_ae, LEDGER_AE_MAX, false) ||
        !ledger__str_ok(d->destination, LEDGER_URL_MAX, false) ||
        d->delivered_ms < 0 || d->delivered_ms > LEDGER__MS_MAX ||
        d->arrived_ms < 0 || d->arrived_ms > LEDGER__MS_MAX ||
        d->bytes > (uint64_t)INT64_MAX ||
        (d->outcome != LEDGER_STORED && d->outcome != LEDGER_ALREADY_EXISTED))
        return -EINVAL;
    size = sizeof(*e) + ledger__str_size(d->sop_instance_uid) +
           ledger__str_size(d->sop_class_uid) + ledger__str_size(d->study_uid) +
           ledger__str_size(d->series_uid) + ledger__str_size(d->calling_ae) +
           ledger__str_size(d->destination);
    e = ledger__entry_new(LEDGER__DELIVERY, size);
    if (e == NULL)
        return -ENOMEM;
    pos = (char *)(e + 1);
    e->u.d.sop_uid = ledger__put(&pos, d->sop_instance_uid);
    e->u.d.sop_class_uid = ledger__put(&pos, d->sop_class_uid);
    e->u.d.study_uid = ledger__put(&pos, d->study_uid);
    e->u.d.series_uid = ledger__put(&pos, d->series_uid);
    e->u.d.calling_ae = ledger__put(&pos, d->calling_ae);
    e->u.d.destination = ledger__put(&pos, d->destination);
    e->u.d.arrived_ms = d->arrived_ms;
    e->u.d.delivered_ms = d->delivered_ms;
    e->u.d.bytes = d->bytes;
    e->u.d.outcome = (int)d->outcome;
    return ledger__enqueue(lg, e);
}

int ledger_record_commit_received(struct ledger *lg, const char *tx_uid,
                                  const char *calling_ae, int64_t received_ms,
                                  const struct ledger_commit_ref *items,
                                  size_t n_items)
{
    struct ledger__entry *e;
    struct ledger__item *out;
    size_t size;
    char *pos;
    int r = ledger__writable(lg);

    if (r < 0)
        return r;
    if (!ledger__str_ok(tx_uid, LEDGER_UID_MAX, true) ||
        !ledger__str_ok(calling_ae, LEDGER_AE_MAX, false) || received_ms < 0 ||
        items == NULL || n_items == 0)
        return -EINVAL;
    /* An entry this large could never be queued (and the sums below stay
     * far from overflowing). */
    if (n_items > lg->p.queue_bytes_max / sizeof(*out)) {
        (void)pthread_mutex_lock(&lg->qlock);
        lg->stats.dropped++;
        (void)pthread_mutex_unlock(&lg->qlock);
        return -ENOBUFS;
    }
    size = sizeof(*e) + n_items * sizeof(*out) + ledger__str_size(tx_uid) +
           ledger__str_size(calling_ae);
    for (size_t i = 0; i < n_items; i++) {
        if (!ledger__str_ok(items[i].sop_instance_uid, LEDGER_UID_MAX, true) ||
            !ledger__str_ok(items[i].sop_class_uid, LEDGER_UID_MAX, false))
            return -EINVAL;
        size += ledger__str_size(items[i].sop_instance_uid) +
                ledger__str_size(items[i].sop_class_uid);
    }
    e = ledger__entry_new(LEDGER__COMMIT_RECEIVED, size);
    if (e == NULL)
        return -ENOMEM;
    out = (struct ledger__item *)(e + 1);
    pos = (char *)(out + n_items);
    e->u.rx.tx_uid = ledger__put(&pos, tx_uid);
    e->u.rx.calling_ae = ledger__put(&pos, calling_ae);
    e->u.rx.received_ms = received_ms;
    e->u.rx.n_items = n_items;
    e->u.rx.items = out;
    for (size_t i = 0; i < n_items; i++) {
        out[i].sop_uid = ledger__put(&pos, items[i].sop_instance_uid);
        out[i].sop_class_uid = ledger__put(&pos, items[i].sop_class_uid);
    }
    return ledger__enqueue(lg, e);
}

int ledger_record_commit_resolved(struct ledger *lg,
                                  const struct ledger_commit_resolution *res)
{
    struct ledger__entry *e;
    char *pos;
    int r = ledger__writable(lg);

    if (r < 0)
        return r;
    if (res == NULL || !ledger__str_ok(res->tx_uid, LEDGER_UID_MAX, true) ||
        !ledger__str_ok(res->sop_instance_uid, LEDGER_UID_MAX, true) ||
        !ledger__str_ok(res->study_uid, LEDGER_UID_MAX, false) ||
        (res->result != LEDGER_ITEM_COMMITTED &&
         res->result != LEDGER_ITEM_FAILED) ||
        res->basis < LEDGER_BASIS_NONE || res->basis > LEDGER_BASIS_OTHER ||
        res->resolved_ms < 0)
        return -EINVAL;
    e = ledger__entry_new(LEDGER__COMMIT_RESOLVED,
                          sizeof(*e) + ledger__str_size(res->tx_uid) +
                              ledger__str_size(res->sop_instance_uid) +
                              ledger__str_size(res->study_uid));
    if (e == NULL)
        return -ENOMEM;
    pos = (char *)(e + 1);
    e->u.res.tx_uid = ledger__put(&pos, res->tx_uid);
    e->u.res.sop_uid = ledger__put(&pos, res->sop_instance_uid);
    e->u.res.study_uid = ledger__put(&pos, res->study_uid);
    e->u.res.result = (int)res->result;
    e->u.res.reason =
        res->result == LEDGER_ITEM_FAILED ? res->failure_reason : 0;
    e->u.res.basis = (int)res->basis;
    e->u.res.resolved_ms = res->resolved_ms;
    return ledger__enqueue(lg, e);
}

int ledger_record_commit_reported(struct ledger *lg, const char *tx_uid,
                                  unsigned event_type, int64_t reported_ms)
{
    struct ledger__entry *e;
    char *pos;
    int r = ledger__writable(lg);

    if (r < 0)
        return r;
    if (!ledger__str_ok(tx_uid, LEDGER_UID_MAX, true) ||
        (event_type != 1 && event_type != 2) || reported_ms < 0)
        return -EINVAL;
    e = ledger__entry_new(LEDGER__COMMIT_REPORTED,
                          sizeof(*e) + ledger__str_size(tx_uid));
    if (e == NULL)
        return -ENOMEM;
    pos = (char *)(e + 1);
    e->u.rep.tx_uid = ledger__put(&pos, tx_uid);
    e->u.rep.event_type = event_type;
    e->u.rep.reported_ms = reported_ms;
    return ledger__enqueue(lg, e);
}

/*
 * Waits on lg->done (qlock held) until @until_ms (monotonic) or forever if
 * @timeout_ms < 0; returns false once the time is up.
 */
static bool ledger__wait_done(struct ledger *lg, int timeout_ms,
                              uint64_t until_ms)
{
    struct timespec ts;

    if (timeout_ms < 0) {
        (void)pthread_cond_wait(&lg->done, &lg->qlock);
        return true;
    }
    if (ledger__mono_ms() >= until_ms)
        return false;
    ts = ledger__deadline(until_ms, 0);
    (void)pthread_cond_timedwait(&lg->done, &lg->qlock, &ts);
    return true;
}

int ledger_flush(struct ledger *lg, int timeout_ms)
{
    uint64_t until =
        ledger__mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    uint64_t target;
    int r = 0;

    if (lg == NULL)
        return -ENODEV;
    if (lg->readonly)
        return 0;
    (void)pthread_mutex_lock(&lg->qlock);
    target = lg->seq_queued;
    lg->flushers++;
    (void)pthread_cond_signal(&lg->work);
    while (lg->seq_done < target) {
        if (!ledger__wait_done(lg, timeout_ms, until)) {
            r = -ETIMEDOUT;
            break;
        }
    }
    /* Report each loss once: to the first flush that covers it. */
    if (r == 0 && lg->lost_lo != 0 && lg->lost_lo <= target) {
        r = lg->lost_code;
        if (lg->lost_hi <= target)
            lg->lost_lo = lg->lost_hi = 0;
        else
            lg->lost_lo = target + 1;
    }
    lg->flushers--;
    (void)pthread_mutex_unlock(&lg->qlock);
    return r;
}

int ledger_prune(struct ledger *lg, int64_t cutoff_ms)
{
    int r = ledger__writable(lg);

    if (r < 0)
        return r;
    if (cutoff_ms <= 0)
        return 0;
    if (cutoff_ms > LEDGER__MS_MAX)
        cutoff_ms = LEDGER__MS_MAX;
    (void)pthread_mutex_lock(&lg->qlock);
    if (cutoff_ms > lg->prune_cutoff)
        lg->prune_cutoff = cutoff_ms;
    lg->prune_error = 0;
    (void)pthread_cond_signal(&lg->work);
    (void)pthread_mutex_unlock(&lg->qlock);
    return 0;
}

int ledger_prune_wait(struct ledger *lg, int timeout_ms)
{
    uint64_t until =
        ledger__mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    int r = 0;

    if (lg == NULL)
        return -ENODEV;
    if (lg->readonly)
        return 0;
    (void)pthread_mutex_lock(&lg->qlock);
    while (lg->prune_cutoff > 0) {
        if (!ledger__wait_done(lg, timeout_ms, until)) {
            r = -ETIMEDOUT;
            break;
        }
    }
    if (r == 0)
        r = lg->prune_error;
    (void)pthread_mutex_unlock(&lg->qlock);
    return r;
}

/*
 * With qlock held: waits for work, then, unless a flush, a stop, a prune or
 * a full group cuts it short, for the batching window of the oldest
 * waiting entry.
 */
static void ledger__wait_for_work(struct ledger *lg)
{
    while (!lg->stop && lg->count == 0 && lg->prune_cutoff == 0)
        (void)pthread_cond_wait(&lg->work, &lg->qlock);
    while (!lg->stop && lg->count > 0 && lg->count < lg->p.group_max &&
           lg->flushers == 0 && lg->prune_cutoff == 0 &&
           lg->p.group_wait_ms > 0) {
        struct timespec ts =
            ledger__deadline(lg->first_queued_ms, lg->p.group_wait_ms);

        if (ledger__mono_ms() >= lg->first_queued_ms + lg->p.group_wait_ms)
            break;
        (void)pthread_cond_timedwait(&lg->work, &lg->qlock, &ts);
    }
}

/* With qlock held: moves up to group_max entries into the writer's batch. */
static size_t ledger__take(struct ledger *lg)
{
    size_t n = lg->count < lg->p.group_max ? lg->count : lg->p.group_max;

    for (size_t i = 0; i < n; i++) {
        struct ledger__entry *e = lg->ring[lg->head];

        lg->w.batch[i] = e;
        lg->stats.queue_bytes -= e->size;
        lg->head = (lg->head + 1) % lg->p.queue_max;
    }
    lg->count -= n;
    if (lg->count > 0)
        lg->first_queued_ms = ledger__mono_ms();
    return n;
}

/* With qlock held: records a failure for the counters. */
static void ledger__note_error(struct ledger *lg, int r)
{
    lg->stats.last_error = r;
    (void)snprintf(lg->stats.last_error_text, sizeof(lg->stats.last_error_text),
                   "%s", lg->w.errtext);
    if (r == -EUCLEAN)
        atomic_store(&lg->broken, true);
}

/* Writes one batch of @n entries; with qlock held on entry and exit. */
static void ledger__run_group(struct ledger *lg, size_t n)
{
    uint64_t ignored = 0;
    int r;

    (void)pthread_mutex_unlock(&lg->qlock);
    r = ledger__write_group(lg, lg->w.batch, n, &ignored);
    for (size_t i = 0; i < n; i++)
        free(lg->w.batch[i]);
    (void)pthread_mutex_lock(&lg->qlock);
    if (r < 0) {
        if (lg->lost_lo == 0)
            lg->lost_lo = lg->seq_done + 1;
        lg->lost_hi = lg->seq_done + n;
        lg->lost_code = r;
        lg->stats.failed += n;
        ledger__note_error(lg, r);
    } else {
        lg->stats.written += n;
        lg->stats.groups++;
        lg->stats.ignored += ignored;
    }
    lg->seq_done += n;
    (void)pthread_cond_broadcast(&lg->done);
}

/* Runs one prune chunk; with qlock held on entry and exit. */
static void ledger__run_prune(struct ledger *lg)
{
    int64_t cutoff = lg->prune_cutoff;
    uint64_t deliveries = 0;
    uint64_t commits = 0;
    bool more = false;
    bool deleted = false;
    int r;

    (void)pthread_mutex_unlock(&lg->qlock);
    r = ledger__prune_chunk(lg, cutoff, &more, &deliveries, &commits, &deleted);
    (void)pthread_mutex_lock(&lg->qlock);
    lg->stats.pruned_deliveries += deliveries;
    lg->stats.pruned_commits += commits;
    if (r == 0 && deleted)
        lg->stats.prune_chunks++;
    if (r < 0) {
        ledger__note_error(lg, r);
        lg->prune_error = r;
        lg->prune_cutoff = 0;
    } else if (!more && lg->prune_cutoff == cutoff) {
        lg->prune_cutoff = 0;
    }
    if (lg->prune_cutoff == 0)
        (void)pthread_cond_broadcast(&lg->done);
}

/*
 * The writer thread: one group of queued entries, then one prune chunk if
 * a prune is pending, again and again. On stop it drains the queue (no
 * more pruning) and returns.
 */
static void *ledger__writer_main(void *arg)
{
    struct ledger *lg = arg;

    (void)pthread_mutex_lock(&lg->qlock);
    for (;;) {
        size_t n;

        ledger__wait_for_work(lg);
        n = ledger__take(lg);
        if (n > 0)
            ledger__run_group(lg, n);
        if (lg->stop) {
            if (lg->count == 0)
                break;
            continue;
        }
        if (lg->prune_cutoff > 0)
            ledger__run_prune(lg);
    }
    /* A prune cut short by the stop: waiters must not hang. */
    lg->prune_cutoff = 0;
    (void)pthread_cond_broadcast(&lg->done);
    (void)pthread_mutex_unlock(&lg->qlock);
    return NULL;
}

int ledger__writer_start(struct ledger *lg, char *err, size_t err_len)
{
    sigset_t all;
    sigset_t old;
    int r;

    lg->w.batch = calloc(lg->p.group_max, sizeof(*lg->w.batch));
    if (lg->w.batch == NULL) {
        ledger__err(err, err_len, "out of memory");
        return -ENOMEM;
    }
    /* Signals belong to the program's threads, not to this one. */
    (void)sigfillset(&all);
    (void)pthread_sigmask(SIG_SETMASK, &all, &old);
    r = pthread_create(&lg->thread, NULL, ledger__writer_main, lg);
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        ledger__err(err, err_len, "pthread_create() failed: %s", strerror(r));
        return -r;
    }
    lg->thread_started = true;
    return 0;
}

void ledger__writer_stop(struct ledger *lg)
{
    (void)pthread_mutex_lock(&lg->qlock);
    lg->stop = true;
    (void)pthread_cond_signal(&lg->work);
    (void)pthread_mutex_unlock(&lg->qlock);
    (void)pthread_join(lg->thread, NULL);
    lg->thread_started = false;
}
