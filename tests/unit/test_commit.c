/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_commit - the Storage Commitment provider (bridge/commit.h) on a
 * temporary spool, without a server or a ledger: a request is in commit/
 * when the handler returns; a repeated request is -EALREADY, another with
 * the same Transaction UID -EEXIST; a delivery resolves its items; the
 * resolved transaction's report is written and kept while the modality's
 * port is closed; a restart reads requests and reports back; files that
 * are not transactions are left alone; an instance in failed/ is 0110;
 * the ledger the service owns is opened once its directory exists, and
 * opened again when its file is removed, records resuming;
 * commit.same_association through the handler (report_take, report_done).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bridge/commit.h"
#include "ledger/ledger.h"
#include "scp/scp.h"
#include "spool/spool.h"
#include "spool/txn.h"
#include "tap.h"

static char root[64];
static char err[512];

/* A loopback port nobody listens on (bound, then closed). */
static uint16_t closed_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port = 0;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static bool wait_file(struct spool *spool, const char *name, bool present,
                      int seconds)
{
    for (int i = 0; i < seconds * 20; i++) {
        if (spool_txn_exists(spool, name) == present)
            return true;
        usleep(50 * 1000);
    }
    return false;
}

static struct commit_service *start_ledger(struct spool *spool,
                                           const struct commit_remote *remote,
                                           const char *ledger_path)
{
    struct commit_params p;

    memset(&p, 0, sizeof(p));
    p.ledger_path = ledger_path;
    p.spool = spool;
    p.our_ae = "STOWBRIDGE";
    p.destination = "http://127.0.0.1:1/dicom-web";
    p.remotes = remote;
    p.remote_count = 1;
    p.max_wait_h = 24;
    p.report_retry_max_s = 2;
    p.timeout_s = 2;
    return commit_start(&p, err, sizeof(err));
}

static void deliver(struct commit_service *cs, const char *sop, const char *id);

/*
 * commit.same_association through the handler: report_take() says "not
 * yet" while the request is pending, then gives every instance; a report
 * sent there finishes the transaction; one handed back (association
 * ended) goes to the sender, which keeps it while the port is closed.
 */
static void test_same_association(struct spool *spool,
                                  const struct commit_remote *remote)
{
    static const char *cls = "1.2.840.10008.5.1.4.1.1.2";
    struct commit_params p;
    struct commit_service *cs;
    struct scp_commit_handler h;
    struct scp_commit_ref ref;
    struct scp_commit_request rq;
    struct scp_commit_report rep;
    struct commit_counts before;
    struct commit_counts c;

    memset(&p, 0, sizeof(p));
    p.spool = spool;
    p.our_ae = "STOWBRIDGE";
    p.remotes = remote;
    p.remote_count = 1;
    p.max_wait_h = 24;
    p.report_retry_max_s = 2;
    p.timeout_s = 2;
    p.same_association = true;
    cs = commit_start(&p, err, sizeof(err));
    CHECK_MSG(cs != NULL, "%s", err);
    if (cs == NULL)
        return;
    commit_handler_init(cs, &h);
    CHECK(h.report_take != NULL && h.report_done != NULL);
    memset(&ref, 0, sizeof(ref));
    snprintf(ref.sop_class_uid, sizeof(ref.sop_class_uid), "%s", cls);
    snprintf(ref.sop_instance_uid, sizeof(ref.sop_instance_uid), "1.2.3.6.1");
    memset(&rq, 0, sizeof(rq));
    rq.tx_uid = "1.2.3.200";
    rq.calling_ae = "MOD1";
    rq.peer = "127.0.0.1";
    rq.items = &ref;
    rq.item_count = 1;
    rq.report_here = true;
    CHECK(h.request(h.ctx, &rq, err, sizeof(err)) == 0);
    CHECK(h.report_take(h.ctx, "1.2.3.200", &rep) == 0);
    CHECK(h.report_take(h.ctx, "1.2.3.999", &rep) < 0);
    deliver(cs, "1.2.3.6.1", "1763855999.300001-9f1c2b3a4d5e6f70");
    CHECK(wait_file(spool, "1.2.3.200.rep", true, 5));
    CHECK(h.report_take(h.ctx, "1.2.3.200", &rep) == 1);
    CHECK(rep.item_count == 1 && strcmp(rep.tx_uid, "1.2.3.200") == 0 &&
          strcmp(rep.items[0].sop_instance_uid, "1.2.3.6.1") == 0 &&
          rep.items[0].failure_reason == 0 &&
          strcmp(rep.retrieve_ae, "STOWBRIDGE") == 0);
    commit_get_counts(cs, &before);
    h.report_done(h.ctx, "1.2.3.200", true, NULL);
    CHECK(!spool_txn_exists(spool, "1.2.3.200.rep"));
    commit_get_counts(cs, &c);
    /* (The reports of main()'s transactions are still waiting.) */
    CHECK(c.reports_sent == 1 &&
          c.reports_waiting + 1 == before.reports_waiting);
    CHECK(h.report_take(h.ctx, "1.2.3.200", &rep) < 0);

    /* Handed back before it was ready: the sender's now. */
    rq.tx_uid = "1.2.3.201";
    CHECK(h.request(h.ctx, &rq, err, sizeof(err)) == 0);
    h.report_done(h.ctx, "1.2.3.201", false, NULL);
    CHECK(h.report_take(h.ctx, "1.2.3.201", &rep) < 0);
    CHECK(wait_file(spool, "1.2.3.201.rep", true, 10));
    commit_stop(cs);
    CHECK(spool_txn_exists(spool, "1.2.3.201.rep"));
    CHECK(spool_txn_remove(spool, "1.2.3.201.rep", err, sizeof(err)) == 0);
}

static struct commit_service *start(struct spool *spool,
                                    const struct commit_remote *remote)
{
    return start_ledger(spool, remote, NULL);
}

/* True once the ledger at @path (read-only) knows @sop, within @seconds. */
static bool ledger_has(const char *path, const char *sop, int seconds)
{
    for (int i = 0; i <= seconds * 10; i++) {
        struct ledger_params p = { .path = path,
                                   .flags = LEDGER_OPEN_READONLY };
        struct ledger *lg = NULL;
        struct ledger_instance li;
        bool found = false;

        if (ledger_open(&p, &lg, err, sizeof(err)) == 0) {
            found = ledger_find_instance(lg, sop, &li) == 0;
            ledger_close(lg);
        }
        if (found)
            return true;
        if (i < seconds * 10)
            usleep(100 * 1000);
    }
    return false;
}

static bool wait_reopens(struct commit_service *cs, unsigned long n,
                         int seconds)
{
    struct commit_counts c;

    for (int i = 0; i < seconds * 20; i++) {
        commit_get_counts(cs, &c);
        if (c.ledger_reopens >= n)
            return true;
        usleep(50 * 1000);
    }
    return false;
}

static void deliver(struct commit_service *cs, const char *sop, const char *id)
{
    struct spool_meta meta;

    memset(&meta, 0, sizeof(meta));
    snprintf(meta.sop_uid, sizeof(meta.sop_uid), "%s", sop);
    snprintf(meta.study_uid, sizeof(meta.study_uid), "1.2.3");
    snprintf(meta.calling_ae, sizeof(meta.calling_ae), "MOD1");
    commit_note_delivered(cs, id, &meta, false);
}

/*
 * The ledger the service owns: a directory that does not exist yet (the
 * open is retried with backoff until it does), then its file removed
 * while running (opened again; records resume).
 */
static void test_ledger_reopen(struct spool *spool,
                               const struct commit_remote *remote)
{
    char dir[128];
    char path[160];
    char side[200];
    struct commit_service *cs;

    snprintf(dir, sizeof(dir), "%s/ledger-dir", root);
    snprintf(path, sizeof(path), "%s/ledger.db", dir);
    cs = start_ledger(spool, remote, path);
    CHECK_MSG(cs != NULL, "%s", err);
    if (cs == NULL)
        return;
    CHECK(mkdir(dir, 0700) == 0);
    CHECK_MSG(wait_reopens(cs, 1, 20), "opened once its directory exists");
    deliver(cs, "1.2.3.5.1", "1763855999.200001-9f1c2b3a4d5e6f70");
    CHECK(ledger_has(path, "1.2.3.5.1", 10));

    CHECK(unlink(path) == 0);
    snprintf(side, sizeof(side), "%s-wal", path);
    (void)unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    (void)unlink(side);
    CHECK_MSG(wait_reopens(cs, 2, 20), "opened again once removed");
    deliver(cs, "1.2.3.5.2", "1763855999.200002-9f1c2b3a4d5e6f71");
    CHECK(ledger_has(path, "1.2.3.5.2", 10));
    /* A new ledger: the row of the removed file is gone with it. */
    CHECK(!ledger_has(path, "1.2.3.5.1", 0));
    commit_stop(cs);
}

/*
 * Reports over DICOM TLS (dicom.remote_aes "tls"): a remote with tls and
 * no outbound TLS material is refused at start; the material and the pin
 * are copied (the caller's strings may go); scp_commit_send_report()
 * refuses a TLS remote without material and fails, sending nothing, when
 * the CA file cannot be read.
 */
static void test_tls(struct spool *spool)
{
    static const struct scp_commit_result item = { "1.2.840.10008.5.1.4.1.1.2",
                                                   "1.2.3.4.1", 0 };
    struct commit_remote tls_remote = { "MODTLS", "127.0.0.1", closed_port(),
                                        true, NULL };
    struct scp_outbound_tls out;
    struct scp_commit_report rep;
    struct scp_remote to;
    struct commit_params p;
    struct commit_service *cs;
    char ca[64];
    char pin[65];
    uint16_t status = 0xffff;

    memset(&p, 0, sizeof(p));
    p.spool = spool;
    p.our_ae = "STOWBRIDGE";
    p.remotes = &tls_remote;
    p.remote_count = 1;
    p.max_wait_h = 24;
    p.report_retry_max_s = 2;
    p.timeout_s = 2;
    err[0] = '\0';
    cs = commit_start(&p, err, sizeof(err));
    CHECK(cs == NULL);
    CHECK_MSG(strstr(err, "MODTLS needs TLS") != NULL, "%s", err);
    commit_stop(cs);

    memset(&out, 0, sizeof(out));
    out.ca_file = NULL;
    p.outbound_tls = &out;
    cs = commit_start(&p, err, sizeof(err));
    CHECK_MSG(cs == NULL, "a CA file is needed");
    commit_stop(cs);

    snprintf(ca, sizeof(ca), "/nonexistent/ca.pem");
    memset(pin, 'a', 64);
    pin[64] = '\0';
    out.ca_file = ca;
    out.profile = SCP_TLS_BCP195_ND;
    out.security_level = 2;
    tls_remote.certificate_sha256 = pin;
    cs = commit_start(&p, err, sizeof(err));
    CHECK_MSG(cs != NULL, "%s", err);
    memset(ca, 0, sizeof(ca));
    memset(pin, 0, sizeof(pin));
    commit_stop(cs);

    memset(&rep, 0, sizeof(rep));
    rep.tx_uid = "1.2.3.77";
    rep.retrieve_ae = "STOWBRIDGE";
    rep.items = &item;
    rep.item_count = 1;
    memset(&to, 0, sizeof(to));
    to.ae_title = "MODTLS";
    to.host = "127.0.0.1";
    to.port = closed_port();
    to.tls = true;
    err[0] = '\0';
    CHECK(scp_commit_send_report("STOWBRIDGE", &to, NULL, &rep, 2, &status, err,
                                 sizeof(err)) == -EINVAL);
    CHECK_MSG(strstr(err, "needs TLS") != NULL, "%s", err);
    snprintf(ca, sizeof(ca), "/nonexistent/ca.pem");
    err[0] = '\0';
    CHECK(scp_commit_send_report("STOWBRIDGE", &to, &out, &rep, 2, &status, err,
                                 sizeof(err)) == -EINVAL);
    CHECK_MSG(strstr(err, "CA file") != NULL, "%s", err);
    CHECK(status == 0xffff);
    /* Not tls: the material is not used, the closed port answers. */
    to.tls = false;
    CHECK(scp_commit_send_report("STOWBRIDGE", &to, &out, &rep, 2, &status, err,
                                 sizeof(err)) == -ECONNREFUSED);
}

int main(void)
{
    static const char *cls = "1.2.840.10008.5.1.4.1.1.2";
    struct scp_commit_ref refs[3];
    struct scp_commit_request rq;
    struct scp_commit_handler h;
    struct commit_remote remote = { "MOD1", "127.0.0.1", closed_port(), false,
                                    NULL };
    struct commit_counts counts;
    struct commit_service *cs;
    struct spool *spool = NULL;
    struct spool_meta meta;
    char *data = NULL;
    size_t len = 0;

    CHECK(scp_global_init(err, sizeof(err)) == 0);
    snprintf(root, sizeof(root), "/tmp/sb-commit-XXXXXX");
    CHECK(mkdtemp(root) != NULL);
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    /* Something in commit/ that is not a transaction: left alone. */
    CHECK(spool_txn_write(spool, "9.9.req", "garbage\n", 8, 0, err,
                          sizeof(err)) == 0);

    cs = start(spool, &remote);
    CHECK_MSG(cs != NULL, "%s", err);
    if (cs == NULL)
        return tap_done();
    commit_handler_init(cs, &h);

    memset(refs, 0, sizeof(refs));
    memset(&rq, 0, sizeof(rq));
    snprintf(refs[0].sop_class_uid, sizeof(refs[0].sop_class_uid), "%s", cls);
    snprintf(refs[0].sop_instance_uid, sizeof(refs[0].sop_instance_uid),
             "1.2.3.4.1");
    refs[1] = refs[0];
    snprintf(refs[1].sop_instance_uid, sizeof(refs[1].sop_instance_uid),
             "1.2.3.4.2");
    refs[2] = refs[0]; /* named twice */
    rq.tx_uid = "1.2.3.100";
    rq.calling_ae = "MOD1";
    rq.peer = "127.0.0.1";
    rq.items = refs;
    rq.item_count = 3;
    CHECK(h.request(h.ctx, &rq, err, sizeof(err)) == 0);
    /* Durable before the handler returned. */
    CHECK(spool_txn_read(spool, "1.2.3.100.req", &data, &len) == 0);
    CHECK(data != NULL && strstr(data, "tx 1.2.3.100\n") != NULL &&
          strstr(data, "item 1.2.840.10008.5.1.4.1.1.2 1.2.3.4.2\n") != NULL);
    free(data);
    data = NULL;
    CHECK(h.request(h.ctx, &rq, err, sizeof(err)) == -EALREADY);
    rq.item_count = 2;
    CHECK(h.request(h.ctx, &rq, err, sizeof(err)) == -EEXIST);
    rq.item_count = 3;

    /* Both instances delivered: resolved, the report written, and kept
     * since the modality's port is closed. */
    memset(&meta, 0, sizeof(meta));
    snprintf(meta.sop_uid, sizeof(meta.sop_uid), "1.2.3.4.1");
    snprintf(meta.study_uid, sizeof(meta.study_uid), "1.2.3");
    snprintf(meta.calling_ae, sizeof(meta.calling_ae), "MOD1");
    commit_note_delivered(cs, "1763855999.123456-9f1c2b3a4d5e6f70", &meta,
                          false);
    CHECK(spool_txn_exists(spool, "1.2.3.100.req"));
    snprintf(meta.sop_uid, sizeof(meta.sop_uid), "1.2.3.4.2");
    commit_note_delivered(cs, "1763855999.123457-9f1c2b3a4d5e6f71", &meta,
                          true);
    CHECK(wait_file(spool, "1.2.3.100.rep", true, 5));
    CHECK(wait_file(spool, "1.2.3.100.req", false, 5));
    CHECK(spool_txn_read(spool, "1.2.3.100.rep", &data, &len) == 0);
    CHECK(data != NULL &&
          strstr(data, "item 1.2.840.10008.5.1.4.1.1.2 1.2.3.4.1 0000 1\n") !=
              NULL);
    free(data);
    data = NULL;
    commit_get_counts(cs, &counts);
    CHECK(counts.requests == 1 && counts.reports_waiting == 1 &&
          counts.reports_sent == 0);

    /* A second request whose instance is in failed/: 0110. */
    {
        char id[SPOOL_ID_MAX];
        int fd = -1;
        struct scp_commit_ref one = refs[0];

        snprintf(one.sop_instance_uid, sizeof(one.sop_instance_uid),
                 "1.2.3.4.9");
        CHECK(spool_tmp_create(spool, id, &fd, err, sizeof(err)) == 0);
        CHECK(spool_write_all(fd, "DICM", 4) == 0);
        CHECK(spool_commit(spool, id, fd, err, sizeof(err)) == 0);
        snprintf(meta.sop_uid, sizeof(meta.sop_uid), "1.2.3.4.9");
        CHECK(spool_meta_write(spool, id, &meta, err, sizeof(err)) == 0);
        CHECK(spool_move(spool, id, SPOOL_INCOMING, SPOOL_FAILED, err,
                         sizeof(err)) == 0);
        rq.tx_uid = "1.2.3.101";
        rq.items = &one;
        rq.item_count = 1;
        CHECK(h.request(h.ctx, &rq, err, sizeof(err)) == 0);
        CHECK(wait_file(spool, "1.2.3.101.rep", true, 5));
        CHECK(spool_txn_read(spool, "1.2.3.101.rep", &data, &len) == 0);
        CHECK(data != NULL && strstr(data, "1.2.3.4.9 0110 3\n") != NULL);
        free(data);
        data = NULL;
    }

    /* A third one, pending (nothing known): kept as a request. */
    rq.tx_uid = "1.2.3.102";
    rq.items = refs;
    rq.item_count = 1;
    refs[0].sop_instance_uid[0] = '7';
    CHECK(h.request(h.ctx, &rq, err, sizeof(err)) == 0);
    commit_stop(cs);

    /* Restart: everything read back, the garbage file left alone. */
    cs = start(spool, &remote);
    CHECK(cs != NULL);
    commit_get_counts(cs, &counts);
    CHECK(counts.pending == 1 && counts.reports_waiting == 2);
    CHECK(spool_txn_exists(spool, "9.9.req"));
    commit_handler_init(cs, &h);
    CHECK(h.request(h.ctx, &rq, err, sizeof(err)) == -EALREADY);
    commit_stop(cs);

    test_ledger_reopen(spool, &remote);
    test_same_association(spool, &remote);
    test_tls(spool);

    spool_close(spool);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    CHECK(system(cmd) == 0);
    return tap_done();
}
