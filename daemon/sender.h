/* daemon/sender: delivers the outbox to the destinations (design.md section 8).
 *
 * One thread per configured destination makes one attempt at a time: a C-STORE association
 * with every .dcm file of the job's outbox (dicom/scu), or a copy of every file into the
 * folder (written under a hidden temporary name, fsynced, renamed). The outcome goes to the
 * send's row: done when the peer answered success; on a transient failure the next attempt
 * waits retry_initial_s x retry_multiplier^(attempts - 1), at most retry_max_s, and the send
 * is given up (dead) when retry_max_age_s has passed since it was queued; a permanent failure
 * makes it dead at once. A dead send keeps its files and reason in dead/ (outbox.h). The
 * outbox of a job is removed when none of its sends is pending.
 *
 * The loop thread decides what is due: it reads the pending sends from the index on start,
 * after each attempt, when kicked, and at least every few seconds, so sends queued by another
 * process (`mmsegd resend`) are seen. Sends left pending by a crash or a stop are attempted
 * again: a SEG's UIDs are deterministic, so a repeated C-STORE is an exact duplicate.
 * Threads: the functions below run on the loop thread. */
#ifndef MMS_DAEMON_SENDER_H
#define MMS_DAEMON_SENDER_H

#include <stddef.h>
#include <uv.h>

#include "daemon/config.h"
#include "daemon/index.h"
#include "dicom/tls.h"

struct mms_sender_opts {
    const char *state_dir;
    const struct mms_dest_config *dests; /* borrowed; must outlive the sender */
    size_t n_dests;
    unsigned timeout_s;  /* network timeouts of the Store SCU */
    unsigned max_pdu;    /* our maximum receive PDU */
    struct mms_tls *tls; /* the client context for destinations with tls = yes (the sender
                            takes its own reference), or NULL when TLS is not configured */
    const char *node;    /* this node: a send is claimed for it before each attempt */
    double lease_s;      /* for that long, renewed by the node's heartbeat */
    bool idle;           /* a node without the send role: attempts nothing */
};

struct mms_sender;

/* Start a thread per destination and look at the pending sends. Sends to a destination that
 * is not configured (any more) stay pending, with a warning.
 * Ownership: *out is new, stop it with mms_sender_stop(); ix is borrowed and must stay open
 * until then. Returns 0, MMS_ENOMEM, MMS_EIO (a thread or handle could not be made), with
 * why. */
int mms_sender_start(uv_loop_t *loop, struct mms_index *ix, const struct mms_sender_opts *o,
                     struct mms_sender **out, char *why, size_t why_len);

/* New sends were queued: look now instead of at the next timer. */
void mms_sender_kick(struct mms_sender *s);

/* Use the client context t for the attempts that start from now on (a certificate or CA
 * renewed by a reload). Returns 0, or MMS_EINVAL when the sender started without TLS or t is
 * NULL. */
int mms_sender_set_tls(struct mms_sender *s, struct mms_tls *t);

/* Start no new attempt, wait for the running ones to end (each within its timeouts), join
 * the threads and close the handles; the memory is freed once the loop has closed them.
 * NULL is a no-op. */
void mms_sender_stop(struct mms_sender *s);

#endif
