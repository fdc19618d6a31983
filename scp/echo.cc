/* SPDX-License-Identifier: Apache-2.0 */
/*
 * echo - the Verification service, C-ECHO (see scp_int.h): answered
 * with success on any context we accepted.
 */
#include "scp_int.h"

#include "base/log.h"

OFCondition scp__echo_serve(struct scp_assoc *sa,
                            T_ASC_PresentationContextID pres_id,
                            T_DIMSE_Message *msg)
{
    OFCondition cond = DIMSE_sendEchoResponse(
        sa->assoc, pres_id, &msg->msg.CEchoRQ, STATUS_Success, NULL);

    log_debug("event=echo assoc=%lu from=%s@%s", sa->number, sa->calling_ae,
              sa->peer);
    return cond;
}
