/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cred_int - helpers shared only inside web/: by the credential modules
 * (credential.h) and the token cache (oauth.c, which reads JWTs with the
 * same base64url decoder). Not a public interface: names carry "cred__".
 *
 * Errors: 0 or a negative errno with a reason in @err (when non-NULL),
 * formatted with util_err() (base/util.h), as is every reason of these
 * modules; random bytes come from util_random_bytes().
 */
#ifndef STOWBRIDGE_CRED_INT_H
#define STOWBRIDGE_CRED_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;
struct cred_token;

/* Wipes the NUL-terminated @s and frees it. Accepts NULL. */
void cred__free_secret(char *s);

/* Wipes @len bytes of @p and frees it. Accepts NULL. */
void cred__free_secret_n(void *p, size_t len);

/*
 * Reads the regular file at @path (at most @max bytes, else -EFBIG) into
 * a new NUL-terminated buffer (@ret_data, @ret_len). The reason names the
 * path. -ENOENT, -EACCES...: cannot open; -EINVAL: not a regular file;
 * -ENODATA: empty. On failure nothing is returned and what was read is
 * wiped. The caller wipes and frees the data if it is a secret.
 */
int cred__read_file(const char *path, size_t max, char **ret_data,
                    size_t *ret_len, char *err, size_t err_len);

/* A new NUL-terminated string: unpadded base64url (RFC 4648 5) of @data.
 * NULL on out-of-memory. */
char *cred__base64url(const unsigned char *data, size_t len);

/*
 * Decodes unpadded base64url @in (@len bytes) into a new NUL-terminated
 * buffer (@ret_len bytes without the NUL, when not NULL). NULL on bad
 * input or OOM. @lenient, for reading what a server sent only to show
 * it: the standard alphabet's '+' and '/' too, '=' ends the input, and a
 * lone trailing character (fewer than 8 bits) is dropped instead of
 * refused.
 */
char *cred__base64url_decode(const char *in, size_t len, bool lenient,
                             size_t *ret_len);

/*
 * Appends "name=value" to the growing form @*form ("&" first when not
 * empty), both percent-encoded (all but A-Z a-z 0-9 - . _ ~). An old
 * buffer is wiped when it moves. false on out-of-memory (@*form is then
 * wiped and freed, and NULL).
 */
bool cred__form_add(char **form, const char *name, const char *value);

/* A JSON number, or a string holding only a decimal integer ("3599"),
 * in @ret. false otherwise. */
bool cred__json_int(const struct cJSON *item, int64_t *ret);

/* Trims ASCII white space at both ends of @s in place; returns @s. */
char *cred__trim(char *s);

/* Hands out a copy of the token @value with @lifetime (seconds; -1:
 * unknown) in @ret_token. 0, or -ENOMEM with @ret_token untouched. */
int cred__token_set(struct cred_token *ret_token, const char *value,
                    int64_t lifetime);

/*
 * The "error" and "error_description" members of an OAuth 2.0 error
 * answer @root (RFC 6749 5.2), borrowed from it; NULL where a member is
 * absent or not a string, or @root is NULL or not an object.
 */
void cred__oauth_error(const struct cJSON *root, const char **ret_error,
                       const char **ret_description);

#endif
