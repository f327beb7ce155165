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

DP_EXPORT("dp_on_message") int32_t dp_on_message(int32_t payload_len) {
    if (dp_is_reply(dp_inbox_header(inbox))) return 0;
    /* The host copies the payload out of the inbox during the call. */
    int32_t code = dp_reply(DP_INFORM, dp_inbox_payload(inbox), (uint32_t)payload_len);
    return code; /* 0, or the send error as this message's error code */
}
