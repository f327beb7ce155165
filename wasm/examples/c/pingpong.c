/*
 * pingpong: answers pings, and with a peer keeps a rally going (same behaviour as
 * wasm/examples/rust/pingpong.rs).
 *
 * Configuration (UTF-8, surrounding whitespace ignored): empty, or `peer=<agent name>`;
 * anything else refuses the deployment with code 1.
 *
 * Messages:
 * - a request (a ping): replies inform with the same payload (the pong);
 * - an inform that is not a reply (a kick), or any reply (a pong coming back): with a
 *   peer, sends the peer a request with the same payload (the next ping), same
 *   conversation and priority, correlation id counting the pings. Back-pressure (-2)
 *   drops the ping (the rally stops; the next kick restarts it); other send errors are
 *   returned as the message's error code;
 * - a failure reply (or one flagged ERROR) ends the rally with a warning;
 * - anything else: ignored.
 */
#include "dataplane.h"

#define BAD_CONFIG 1

static uint8_t *inbox;
static int has_peer;
static uint64_t peer;
static uint64_t pings;

DP_EXPORT("dp_inbox") int32_t dp_inbox(int32_t capacity) {
    inbox = dp_inbox_alloc(capacity);
    return dp_address(inbox);
}

static int is_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

DP_EXPORT("dp_init") int32_t dp_init(int32_t config_len) {
    /* The configuration is at the inbox; it is gone after this call, so only the peer's
     * id is kept. */
    const uint8_t *start = inbox;
    const uint8_t *end = inbox + (config_len > 0 ? config_len : 0);
    while (start < end && is_space(start[0])) start++;
    while (end > start && is_space(end[-1])) end--;
    has_peer = 0;
    pings = 0;
    if (start == end) return 0;
    static const char prefix[] = "peer=";
    const size_t prefix_len = sizeof prefix - 1;
    if ((size_t)(end - start) > prefix_len) {
        size_t i = 0;
        while (i < prefix_len && start[i] == (uint8_t)prefix[i]) i++;
        if (i == prefix_len) {
            peer = dp_agent_id_n(start + prefix_len, (size_t)(end - start) - prefix_len);
            has_peer = 1;
            return 0;
        }
    }
    dp_log_str(DP_LOG_ERROR, "pingpong: config must be empty or peer=<agent name>");
    return BAD_CONFIG;
}

/* Sends the next ping, with the payload of the message being handled. */
static int32_t ping(const dp_header *h, const uint8_t *payload, int32_t payload_len) {
    if (!has_peer) return 0;
    dp_header out = dp_header_new(peer, DP_REQUEST);
    out.priority = h->priority;
    out.conversation_id = h->conversation_id;
    out.correlation_id = ++pings;
    int32_t code = dp_send(&out, payload, (uint32_t)payload_len);
    return code == DP_E_BACKPRESSURE ? 0 : code;
}

DP_EXPORT("dp_on_message") int32_t dp_on_message(int32_t payload_len) {
    const dp_header *h = dp_inbox_header(inbox);
    const uint8_t *payload = dp_inbox_payload(inbox);
    if (dp_is_reply(h)) {
        if (h->performative == DP_FAILURE || (h->flags & DP_FLAG_ERROR)) {
            dp_log_str(DP_LOG_WARN, "pingpong: failure reply, rally stopped");
            return 0;
        }
        return ping(h, payload, payload_len);
    }
    switch (h->performative) {
    case DP_REQUEST:
        return dp_reply(DP_INFORM, payload, (uint32_t)payload_len);
    case DP_INFORM:
        return ping(h, payload, payload_len);
    default:
        return 0;
    }
}
