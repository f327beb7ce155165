/*
 * counter: keeps a count and a sum of the numbers it is sent (same behaviour as
 * wasm/examples/rust/counter.rs).
 *
 * Messages (replies are ignored):
 * - inform with an 8-byte payload (i64 LE): adds it to the sum, counts it, no reply;
 * - request with an 8-byte payload: adds and counts likewise, then replies inform with
 *   the totals; a request with any other payload length adds nothing and still replies;
 * - query: replies inform with the totals, adds nothing;
 * - anything else: ignored.
 *
 * Totals (16 bytes): count u64 LE, sum i64 LE (the sum wraps on overflow).
 */
#include "dataplane.h"

static uint8_t *inbox;
static uint64_t count;
static uint64_t sum; /* i64 two's complement, kept unsigned so overflow wraps */

DP_EXPORT("dp_inbox") int32_t dp_inbox(int32_t capacity) {
    inbox = dp_inbox_alloc(capacity);
    return dp_address(inbox);
}

DP_EXPORT("dp_init") int32_t dp_init(int32_t config_len) {
    (void)config_len;
    count = 0;
    sum = 0;
    return 0;
}

static void add(const uint8_t *payload, int32_t len) {
    if (len != 8) return; /* not a number */
    sum += dp_load_u64(payload);
    count++;
}

static int32_t reply_totals(void) {
    uint8_t totals[16];
    dp_store_u64(totals, count);
    dp_store_u64(totals + 8, sum);
    return dp_reply(DP_INFORM, totals, sizeof totals);
}

DP_EXPORT("dp_on_message") int32_t dp_on_message(int32_t payload_len) {
    const dp_header *h = dp_inbox_header(inbox);
    const uint8_t *payload = dp_inbox_payload(inbox);
    if (dp_is_reply(h)) return 0;
    switch (h->performative) {
    case DP_INFORM:
        add(payload, payload_len);
        return 0;
    case DP_REQUEST:
        add(payload, payload_len);
        return reply_totals();
    case DP_QUERY:
        return reply_totals();
    default:
        return 0;
    }
}
