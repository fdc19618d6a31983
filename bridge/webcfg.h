/*
 * webcfg - the configuration turned into web/'s parameter structs, so that
 * web/ never sees struct cfg (DESIGN.md section 3). The pointers borrow
 * strings from @cfg, which must outlive the params.
 */
#ifndef STOWBRIDGE_WEBCFG_H
#define STOWBRIDGE_WEBCFG_H

struct cfg;
struct oauth_params;
struct dicomweb_params;

/* auth.* (and upload.ca_file, upload.timeout_s) as token source params;
 * the source's notices go to the log (event=token-lifetime). */
void webcfg_oauth_params(const struct cfg *cfg, struct oauth_params *ret);

/* upload.* as DICOMweb client params (no token source: the caller's). */
void webcfg_dicomweb_params(const struct cfg *cfg,
                            struct dicomweb_params *ret);

#endif
