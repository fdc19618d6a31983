/*
 * test_stow_http - the STOW-RS request on the wire, against a capturing
 * HTTP server in this process: golden multipart framing, headers (type,
 * boundary, Accept, Authorization, no Expect, no Content-Disposition),
 * a body over 1 MiB, the reply (status, body, Retry-After), and failures
 * (missing file, connection refused, connection dropped).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "stow.h"
#include "tap.h"

/* One captured exchange. */
struct capture {
    int listen_fd;
    int port;
    const char *reply;        /* raw HTTP answer; NULL: drop the socket */
    char *request;            /* headers + body as received */
    size_t request_len;
    size_t header_len;        /* up to and including the blank line */
};

static void *serve_once(void *arg)
{
    struct capture *cap = arg;
    size_t cap_bytes = 1 << 16;
    size_t content_length = 0;
    int fd = accept(cap->listen_fd, NULL, NULL);

    cap->request = calloc(1, cap_bytes);
    cap->request_len = 0;
    if (fd < 0 || cap->request == NULL)
        return NULL;
    for (;;) {
        if (cap->request_len + 4096 + 1 > cap_bytes) {
            cap_bytes *= 2;
            cap->request = realloc(cap->request, cap_bytes);
        }
        if (cap->header_len == 0 && cap->reply == NULL &&
            cap->request_len > 0) {
            close(fd);   /* drop the connection mid-request */
            return NULL;
        }
        ssize_t n = read(fd, cap->request + cap->request_len, 4096);
        if (n <= 0)
            break;
        cap->request_len += (size_t)n;
        cap->request[cap->request_len] = '\0';
        if (cap->header_len == 0) {
            char *end = strstr(cap->request, "\r\n\r\n");
            if (end == NULL)
                continue;
            cap->header_len = (size_t)(end - cap->request) + 4;
            char *cl = strcasestr(cap->request, "\r\nContent-Length:");
            if (cl != NULL && cl < end)
                content_length = strtoul(cl + 17, NULL, 10);
        }
        if (cap->header_len != 0 &&
            cap->request_len >= cap->header_len + content_length)
            break;
    }
    if (cap->reply != NULL)
        (void)!write(fd, cap->reply, strlen(cap->reply));
    close(fd);
    return NULL;
}

static int start_server(struct capture *cap, pthread_t *thread)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int one = 1;

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cap->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(cap->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(cap->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(cap->listen_fd, 1) < 0 ||
        getsockname(cap->listen_fd, (struct sockaddr *)&addr, &len) < 0)
        return -1;
    cap->port = ntohs(addr.sin_port);
    return pthread_create(thread, NULL, serve_once, cap);
}

static void stop_server(struct capture *cap, pthread_t thread)
{
    pthread_join(thread, NULL);
    close(cap->listen_fd);
}

static char dir[] = "/tmp/stowbridge-stow-XXXXXX";

static void write_file(const char *name, const char *data, size_t len,
                       char *path, size_t path_len)
{
    snprintf(path, path_len, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f != NULL) {
        fwrite(data, 1, len, f);
        fclose(f);
    }
}

/* The value of header @name in the captured request, or NULL. */
static char *header(const struct capture *cap, const char *name, char *buf,
                    size_t len)
{
    char pattern[128];
    snprintf(pattern, sizeof(pattern), "\r\n%s:", name);
    char *h = strcasestr(cap->request, pattern);
    if (h == NULL || (size_t)(h - cap->request) >= cap->header_len)
        return NULL;
    h += strlen(pattern);
    while (*h == ' ')
        h++;
    size_t n = strcspn(h, "\r\n");
    if (n >= len)
        n = len - 1;
    memcpy(buf, h, n);
    buf[n] = '\0';
    return buf;
}

static void test_golden_framing(void)
{
    static const char reply[] =
        "HTTP/1.1 202 Accepted\r\nContent-Type: application/dicom+json\r\n"
        "Retry-After: 7\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    struct capture cap = { .reply = reply };
    struct stow_params params = { NULL, NULL, 10 };
    struct stow_reply rep;
    char base[128];
    char a[256];
    char b[256];
    char ct[256];
    char expected[1024];
    pthread_t thread;

    write_file("a.dcm", "AAAA", 4, a, sizeof(a));
    write_file("b.dcm", "BB\r\n--BB", 8, b, sizeof(b));
    CHECK(start_server(&cap, &thread) == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/dicom-web/", cap.port);
    params.base_url = base;
    struct stow_client *client = stow_client_new(&params);
    const char *paths[] = { a, b };

    CHECK(client != NULL);
    CHECK(stow_post(client, "1.2.840.99.1", paths, 2, "tok-123", &rep) == 0);
    stop_server(&cap, thread);

    CHECK(rep.http_status == 202);
    CHECK(rep.body != NULL && strcmp(rep.body, "{}") == 0);
    CHECK(rep.retry_after_s == 7);
    stow_reply_free(&rep);

    CHECK_MSG(strncmp(cap.request,
                      "POST /dicom-web/studies/1.2.840.99.1 HTTP/1.1\r\n",
                      47) == 0, "%.60s", cap.request);
    CHECK(header(&cap, "Content-Type", ct, sizeof(ct)) != NULL);
    const char *prefix = "multipart/related; type=\"application/dicom\"; "
                         "boundary=";
    CHECK_MSG(strncmp(ct, prefix, strlen(prefix)) == 0, "%s", ct);
    const char *boundary = ct + strlen(prefix);
    CHECK(strlen(boundary) >= 20);
    char tmp[256];
    CHECK(header(&cap, "Accept", tmp, sizeof(tmp)) != NULL &&
          strcmp(tmp, "application/dicom+json") == 0);
    CHECK(header(&cap, "Authorization", tmp, sizeof(tmp)) != NULL &&
          strcmp(tmp, "Bearer tok-123") == 0);
    CHECK(header(&cap, "Expect", tmp, sizeof(tmp)) == NULL);
    CHECK(strcasestr(cap.request, "Content-Disposition") == NULL);

    /* The body, byte for byte. */
    snprintf(expected, sizeof(expected),
             "--%s\r\nContent-Type: application/dicom\r\n\r\nAAAA\r\n"
             "--%s\r\nContent-Type: application/dicom\r\n\r\nBB\r\n--BB\r\n"
             "--%s--\r\n",
             boundary, boundary, boundary);
    CHECK_MSG(cap.request_len - cap.header_len == strlen(expected) &&
                  memcmp(cap.request + cap.header_len, expected,
                         strlen(expected)) == 0,
              "request:\n%s", cap.request);
    CHECK(header(&cap, "Content-Length", tmp, sizeof(tmp)) != NULL &&
          strtoul(tmp, NULL, 10) == strlen(expected));
    free(cap.request);

    /* A second request on the same client: a new random boundary. */
    struct capture cap2 = { .reply = "HTTP/1.1 200 OK\r\nContent-Length: 0"
                                     "\r\n\r\n" };
    char ct2[256];
    CHECK(start_server(&cap2, &thread) == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", cap2.port);
    stow_client_free(client);
    params.base_url = base;
    client = stow_client_new(&params);
    CHECK(stow_post(client, "1.2.3", paths, 1, NULL, &rep) == 0);
    stop_server(&cap2, thread);
    CHECK(rep.http_status == 200 && rep.retry_after_s == -1);
    CHECK(rep.body != NULL && rep.body_len == 0);
    CHECK(strncmp(cap2.request, "POST /studies/1.2.3 HTTP/1.1", 28) == 0);
    CHECK(header(&cap2, "Authorization", tmp, sizeof(tmp)) == NULL);
    CHECK(header(&cap2, "Content-Type", ct2, sizeof(ct2)) != NULL &&
          strcmp(ct2, ct) != 0);
    stow_reply_free(&rep);
    free(cap2.request);
    stow_client_free(client);
}

static void test_large_body(void)
{
    struct capture cap = { .reply = "HTTP/1.1 200 OK\r\nContent-Length: 0"
                                    "\r\n\r\n" };
    struct stow_params params = { NULL, NULL, 10 };
    size_t big = 2 * 1024 * 1024 + 3;
    char *data = malloc(big);
    char path[256];
    char base[128];
    char tmp[64];
    pthread_t thread;
    struct stow_reply rep;

    memset(data, 'x', big);
    write_file("big.dcm", data, big, path, sizeof(path));
    free(data);
    CHECK(start_server(&cap, &thread) == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", cap.port);
    params.base_url = base;
    struct stow_client *client = stow_client_new(&params);
    const char *paths[] = { path };
    CHECK(stow_post(client, "1.2.3", paths, 1, "t", &rep) == 0);
    stop_server(&cap, thread);
    CHECK(rep.http_status == 200);
    /* Over 1 MiB libcurl would add Expect: 100-continue by itself. */
    CHECK(header(&cap, "Expect", tmp, sizeof(tmp)) == NULL);
    CHECK(cap.request_len - cap.header_len > big);
    stow_reply_free(&rep);
    free(cap.request);
    stow_client_free(client);
}

static void test_failures(void)
{
    struct stow_params params = { NULL, NULL, 5 };
    struct stow_reply rep;
    struct capture cap = { .reply = NULL };
    char base[128];
    char path[256];
    pthread_t thread;
    int port;

    write_file("c.dcm", "CCCC", 4, path, sizeof(path));

    /* A missing file: nothing is sent. */
    params.base_url = "http://127.0.0.1:9";
    struct stow_client *client = stow_client_new(&params);
    const char *missing[] = { "/nonexistent/x.dcm" };
    CHECK(stow_post(client, "1.2.3", missing, 1, NULL, &rep) == -ENOENT);
    CHECK(strstr(rep.error, "/nonexistent/x.dcm") != NULL);
    stow_reply_free(&rep);
    stow_client_free(client);

    /* The server drops the connection in the middle of the request. */
    CHECK(start_server(&cap, &thread) == 0);
    port = cap.port;
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    params.base_url = base;
    client = stow_client_new(&params);
    {
        const char *paths[] = { path };
        int r = stow_post(client, "1.2.3", paths, 1, NULL, &rep);
        CHECK_MSG(r < 0 && rep.http_status == 0 && rep.error[0] != '\0',
                  "dropped: r=%d status=%ld", r, rep.http_status);
    }
    stow_reply_free(&rep);
    stow_client_free(client);
    stop_server(&cap, thread);
    free(cap.request);

    /* Connection refused: the same port, now that nobody listens. */
    client = stow_client_new(&params);
    const char *paths[] = { path };
    CHECK(stow_post(client, "1.2.3", paths, 1, NULL, &rep) == -ECONNREFUSED);
    CHECK(rep.http_status == 0 && rep.error[0] != '\0');
    stow_reply_free(&rep);
    stow_client_free(client);
}

static void test_retry_after(void)
{
    CHECK(stow_parse_retry_after("120", 0) == 120);
    CHECK(stow_parse_retry_after(" 0 ", 0) == 0);
    CHECK(stow_parse_retry_after("999999", 0) == 86400);
    CHECK(stow_parse_retry_after("-5", 0) == -1);
    CHECK(stow_parse_retry_after("soon", 0) == -1);
    CHECK(stow_parse_retry_after("12abc", 0) == -1);
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    CHECK(stow_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT",
                                 784111777 - 30) == 30);
    CHECK(stow_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT",
                                 784111777 + 30) == 0);
}

int main(void)
{
    char cmd[128];

    if (mkdtemp(dir) == NULL)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_golden_framing();
    test_large_body();
    test_failures();
    test_retry_after();
    curl_global_cleanup();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    (void)!system(cmd);
    return tap_done();
}
