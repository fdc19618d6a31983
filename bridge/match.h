/* SPDX-License-Identifier: Apache-2.0 */
/*
 * match - DIMSE matching (PS3.4 C.2.2.2), on plain data sets (dataset.h):
 * what a C-FIND key asks and whether an entity's value satisfies it. Pure:
 * no I/O, no allocation beyond the stack, no logging.
 *
 *   single value   case-sensitive, except PN (ASCII case folded), after
 *                  trimming spaces; PN compares the alphabetic group only
 *                  unless the key names groups ('='), trailing '^' and
 *                  empty groups dropped;
 *   wildcards      '*' any run, '?' one character (one UTF-8 sequence);
 *                  ordinary characters in DA, TM, DT, UI, AT and numbers;
 *   ranges         DA, TM, DT: "a-b", "-b", "a-"; partial values cover
 *                  their whole period; old separators (':' '.') ignored;
 *   numbers        IS, DS, US, ... compared as numbers ("7" is "007");
 *   lists          a key with several values (a UID list) matches when
 *                  any one does, against any of several entity values;
 *   universal      an empty key, or "*", matches anything, even nothing;
 *   sequences      C.2.2.2.6: some item of the entity's sequence matches
 *                  every key of the key's first item.
 *
 * Thread safety: reentrant.
 */
#ifndef STOWBRIDGE_BRIDGE_MATCH_H
#define STOWBRIDGE_BRIDGE_MATCH_H

#include <stdbool.h>

struct ds;
struct ds_attr;

/* True if the two-letter VR @vr is @name ("PN"). */
bool match_vr_is(const char *vr, const char *name);

/*
 * True if the entity value @value (NULL: absent or empty) of VR @vr
 * matches the C-FIND key value @key (NULL or "": universal) as above.
 */
bool match_value(const char *vr, const char *key, const char *value);

/* True if @key has a value to match (not universal); a sequence key when
 * a key of its first item has one. */
bool match_key_has_condition(const struct ds_attr *key);

/*
 * True if @entity satisfies @key. @server_matched: the server was asked
 * to match this key, so an entity that lacks the attribute is taken on
 * the server's word (a QIDO-RS server need not return what it matched).
 */
bool match_key(const struct ds_attr *key, const struct ds *entity,
               bool server_matched);

#endif
