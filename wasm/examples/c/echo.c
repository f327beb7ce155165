/*
 * echo: replies `inform` with the same payload to every message that is not itself a
 * reply (replies are dropped, so two echoes cannot bounce a message forever).
 * State: none. Payload: any bytes, returned unchanged.
 */
#include "dataplane.h"

/* The inbox: where the host writes the configuration, then each message. */
static uint8_t *inbox;

DP_EXPORT("dp_inbox") int32_t dp_inbox(int32_t capacity) {
    inbox = dp_inbox_alloc(capacity);
    return dp_address(inbox);
}

DP_EXPORT("dp_init") int32_t dp_init(int32_t config_len) {
    (void)config_len; /* no configuration */
    return 0;
}

/* Answers one message: the reply's code is the message's error code (0, or the send
 * error). The host copies the payload out of the inbox during the call. */
static int32_t echo(const dp_header *h, const uint8_t *payload, uint32_t payload_len) {
    if (dp_is_reply(h)) return 0;
    return dp_reply(DP_INFORM, payload, payload_len);
}

DP_EXPORT("dp_on_message") int32_t dp_on_message(int32_t payload_len) {
    return echo(dp_inbox_header(inbox), dp_inbox_payload(inbox), (uint32_t)payload_len);
}

/* Several queued messages in one call (see dataplane.h, "Batches"). */
DP_EXPORT("dp_on_batch") int32_t dp_on_batch(int32_t count) {
    dp_batch batch = dp_batch_start(inbox, count);
    for (const dp_header *h; (h = dp_batch_next(&batch)) != 0;) {
        int32_t code = echo(h, dp_batch_payload(h), h->payload_len);
        if (code != 0) return code;
    }
    return 0;
}
