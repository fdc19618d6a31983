/* SPDX-License-Identifier: Apache-2.0 */
/*
 * charset - DICOM string values to UTF-8 by their Specific Character Set
 * (0008,0005), PS3.5 6.1 and Annexes H, I, J, K; through iconv(3).
 *
 * Terms without code extensions: the default repertoire (value returned
 * as it is), ISO_IR 100, 101, 109, 110, 144, 127, 126, 138, 148, 203
 * (ISO 8859), ISO_IR 166 (TIS 620), ISO_IR 13 (JIS X 0201, read as
 * Shift_JIS), ISO_IR 192 (UTF-8, checked), GB18030, GBK. With code
 * extensions ("ISO 2022 IR n", several values '\'-separated, the first
 * one the initial set): the escape sequences of ISO 2022 IR 6, 13, 14
 * (read as ASCII), 87 and 159 (JIS X 0208/0212), 149 (KS X 1001), 58
 * (GB 2312) and the ISO 8859 sets above switch G0 and G1 within a value;
 * CR, LF, FF, TAB and, while G0 is a one-byte set, '\', '^' and '=' go
 * back to the initial sets (PS3.5 6.1.2.5.3).
 *
 * Thread safety: reentrant (one iconv descriptor per call).
 * Errors: -EINVAL for an unknown term or escape sequence, or bytes not
 * valid in their character set; -ENOMEM.
 */
#ifndef STOWBRIDGE_DICOM_CHARSET_H
#define STOWBRIDGE_DICOM_CHARSET_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Converts the @len bytes at @value, in the Specific Character Set
 * @charset (the raw value of (0008,0005); NULL or "" for the default
 * repertoire), to UTF-8: a new NUL-terminated string in *@ret_utf8 (the
 * caller frees it), its length in *@ret_len if not NULL.
 */
int charset_to_utf8(const char *charset, const char *value, size_t len,
                    char **ret_utf8, size_t *ret_len);

#ifdef __cplusplus
}
#endif

#endif
