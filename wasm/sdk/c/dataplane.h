/*
 * dataplane.h: the dataplane agent ABI, version 1, for C (and C++) guests.
 *
 * The contract is docs/agent-abi.md; this header is the same thing written as C: the
 * 48-byte message header, the host functions of module "dataplane_v1", their error
 * codes, agent ids, and helpers for the inbox. No libc is needed. Build with clang:
 *
 *   clang-14 --target=wasm32-unknown-unknown -O2 -nostdlib -mbulk-memory \
 *            -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=65536 \
 *            -I wasm/sdk/c -o agent.wasm agent.c
 *
 * (-mbulk-memory lets clang turn struct copies and zeroing into memory.copy/memory.fill
 * instead of calls to memcpy/memset, which -nostdlib does not provide; the host
 * supports bulk memory.)
 *
 * An agent defines the exports with DP_EXPORT:
 *
 *   static uint8_t *inbox;
 *   DP_EXPORT("dp_inbox") int32_t dp_inbox(int32_t capacity) {
 *       inbox = dp_inbox_alloc(capacity);
 *       return dp_address(inbox);
 *   }
 *   DP_EXPORT("dp_init") int32_t dp_init(int32_t config_len) { return 0; }
 *   DP_EXPORT("dp_on_message") int32_t dp_on_message(int32_t payload_len) {
 *       const dp_header *h = dp_inbox_header(inbox);
 *       if (!(h->flags & DP_FLAG_REPLY))
 *           dp_reply(DP_INFORM, dp_inbox_payload(inbox), (uint32_t)payload_len);
 *       return 0;
 *   }
 *
 * The inbox is the host's between calls: copy out whatever must outlive one call.
 */
#ifndef DATAPLANE_H
#define DATAPLANE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DP_ABI_VERSION 1
/* Bytes of the message header (at the inbox, and at the `header` address of dp_send). */
#define DP_HEADER_BYTES 48

/* Export and import attributes. */
#define DP_EXPORT(name) __attribute__((export_name(name)))
#define DP_IMPORT(name) __attribute__((import_module("dataplane_v1"), import_name(name)))

/* Performatives (header byte 32). */
enum dp_performative {
    DP_REQUEST = 0,
    DP_INFORM = 1,
    DP_QUERY = 2,
    DP_PROPOSE = 3,
    DP_AGREE = 4,
    DP_REFUSE = 5,
    DP_FAILURE = 6,
    DP_NOT_UNDERSTOOD = 7
};

/* Priorities (header byte 33); lower goes first. */
enum dp_priority { DP_CRITICAL = 0, DP_HIGH = 1, DP_NORMAL = 2, DP_LOW = 3 };

/* Flag bits (header bytes 34..36). */
#define DP_FLAG_REPLY ((uint16_t)1) /* answers an earlier message */
#define DP_FLAG_ERROR ((uint16_t)2) /* the payload is a UTF-8 error description */

/* Log levels. */
enum dp_log_level {
    DP_LOG_ERROR = 0,
    DP_LOG_WARN = 1,
    DP_LOG_INFO = 2,
    DP_LOG_DEBUG = 3,
    DP_LOG_TRACE = 4
};

/* Return codes of dp_send and dp_reply. */
#define DP_OK 0
#define DP_E_INVALID (-1)       /* address/length outside memory, or a header field out of range */
#define DP_E_BACKPRESSURE (-2)  /* a queue or the frame pool is full; retry on a later message */
#define DP_E_TOO_LARGE (-3)     /* payload exceeds message_bytes_max */
#define DP_E_UNKNOWN_AGENT (-4) /* addressee would live on this shard and is not deployed */
#define DP_E_NO_MESSAGE (-5)    /* dp_reply outside dp_on_message */
#define DP_E_SEND_LIMIT (-6)    /* this call already sent sends_per_message_max messages */

/*
 * The message header: 48 bytes, little-endian (as is wasm32, so the struct is the
 * layout). For dp_send, `from` and `payload_len` are ignored (the host sets them).
 */
typedef struct dp_header {
    uint64_t to;              /* 0: the addressee's agent id */
    uint64_t from;            /* 8: the sender's agent id (replies go there) */
    uint64_t conversation_id; /* 16: groups the messages of one exchange */
    uint64_t correlation_id;  /* 24: a reply carries its request's value */
    uint8_t performative;     /* 32: enum dp_performative */
    uint8_t priority;         /* 33: enum dp_priority */
    uint16_t flags;           /* 34: DP_FLAG_* */
    uint32_t payload_len;     /* 36: bytes of payload after the header */
    uint64_t reserved;        /* 40: zero; ignore */
} dp_header;

#ifdef __cplusplus
#define DP_STATIC_ASSERT static_assert
#else
#define DP_STATIC_ASSERT _Static_assert
#endif
DP_STATIC_ASSERT(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the ABI is little-endian");
DP_STATIC_ASSERT(sizeof(void *) == 4, "the ABI is wasm32 (32-bit addresses)");
DP_STATIC_ASSERT(sizeof(dp_header) == DP_HEADER_BYTES, "header is 48 bytes");
DP_STATIC_ASSERT(offsetof(dp_header, to) == 0, "to at 0");
DP_STATIC_ASSERT(offsetof(dp_header, from) == 8, "from at 8");
DP_STATIC_ASSERT(offsetof(dp_header, conversation_id) == 16, "conversation_id at 16");
DP_STATIC_ASSERT(offsetof(dp_header, correlation_id) == 24, "correlation_id at 24");
DP_STATIC_ASSERT(offsetof(dp_header, performative) == 32, "performative at 32");
DP_STATIC_ASSERT(offsetof(dp_header, priority) == 33, "priority at 33");
DP_STATIC_ASSERT(offsetof(dp_header, flags) == 34, "flags at 34");
DP_STATIC_ASSERT(offsetof(dp_header, payload_len) == 36, "payload_len at 36");
DP_STATIC_ASSERT(offsetof(dp_header, reserved) == 40, "reserved at 40");

/* Host functions (module "dataplane_v1"). Addresses are 32-bit; lengths are bytes. */

/* Sends a new message; 0 or a DP_E_* code. */
DP_IMPORT("send")
int32_t dp_send(const dp_header *header, const void *payload, uint32_t payload_len);
/* Answers the message being handled (to its sender, same conversation, correlation and
 * priority, REPLY set); 0 or a DP_E_* code. */
DP_IMPORT("reply")
int32_t dp_reply(int32_t performative, const void *payload, uint32_t payload_len);
/* A UTF-8 log line (cut at 1024 bytes). */
DP_IMPORT("log")
void dp_log(int32_t level, const char *text, uint32_t text_len);
/* Monotonic nanoseconds: when the shard started this batch of messages. */
DP_IMPORT("now_ns")
int64_t dp_now_ns(void);
/* This agent's id. */
DP_IMPORT("self_id")
int64_t dp_self_id(void);
/* 64 pseudo-random bits (seeded per agent; deterministic; not for cryptography). */
DP_IMPORT("random")
int64_t dp_random(void);

/* FNV-1a 64 of `len` bytes: the agent id of the name `name`. */
static inline uint64_t dp_agent_id_n(const void *name, size_t len) {
    const uint8_t *p = (const uint8_t *)name;
    uint64_t hash = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        hash ^= p[i];
        hash *= 0x100000001b3ull;
    }
    return hash;
}

/* The agent id of the NUL-terminated name `name`: dp_agent_id("echo") ==
 * 0x3000e56026044164. Folded at compile time for a literal at -O2. */
static inline uint64_t dp_agent_id(const char *name) {
    uint64_t hash = 0xcbf29ce484222325ull;
    for (; *name; name++) {
        hash ^= (uint8_t)*name;
        hash *= 0x100000001b3ull;
    }
    return hash;
}

/* Logs a NUL-terminated string. */
static inline void dp_log_str(int32_t level, const char *text) {
    uint32_t len = 0;
    while (text[len]) len++;
    dp_log(level, text, len);
}

/* A header for dp_send: to `to`, meaning `performative`, normal priority, no flags, ids 0.
 * Adjust the other fields before sending. */
static inline dp_header dp_header_new(uint64_t to, enum dp_performative performative) {
    dp_header h;
    h.to = to;
    h.from = 0;
    h.conversation_id = 0;
    h.correlation_id = 0;
    h.performative = (uint8_t)performative;
    h.priority = DP_NORMAL;
    h.flags = 0;
    h.payload_len = 0;
    h.reserved = 0;
    return h;
}

/* Bytes of the static inbox: the host's default capacity (48 + 65456). */
#define DP_STATIC_INBOX_BYTES (48 + 65456)

/* An inbox of `capacity` bytes, used by nothing else and untouched until the host writes
 * a message there: for the default capacity, a zero-initialised static buffer (part of
 * the initial memory, so a spawn costs no memory.grow); for a larger one, fresh pages
 * from memory.grow. NULL if memory cannot grow or capacity is smaller than a header.
 * Call it from dp_inbox, once.
 *
 * The flag and the buffer are one object whose first access is a write: a spawn then
 * faults in one host page, once, rather than a page read first (mapped as the shared
 * zero page) and faulted again on the write. In a fresh pool slot each fault costs
 * 2 to 3 us. Keep an agent's other statics few and small for the same reason. */
static inline uint8_t *dp_inbox_alloc(int32_t capacity) {
    static struct {
        _Alignas(32) int32_t requested;
        int32_t taken;
        _Alignas(8) uint8_t bytes[DP_STATIC_INBOX_BYTES];
    } dp_static;
    dp_static.requested = capacity;
    __asm__ volatile("" ::: "memory"); /* keep the write above first */
    if (capacity < DP_HEADER_BYTES) return (uint8_t *)0;
    if (!dp_static.taken && (uint32_t)capacity <= DP_STATIC_INBOX_BYTES) {
        dp_static.taken = 1;
        return dp_static.bytes;
    }
    uint32_t pages = ((uint32_t)capacity + 65535u) / 65536u;
    size_t old = __builtin_wasm_memory_grow(0, pages);
    if (old == (size_t)-1) return (uint8_t *)0;
    return (uint8_t *)(old * 65536u);
}

/* An address as dp_inbox returns it (0 refuses). */
static inline int32_t dp_address(const void *p) { return (int32_t)(uintptr_t)p; }

/* The header of the message in the inbox (the inbox is 8-byte aligned). */
static inline const dp_header *dp_inbox_header(const uint8_t *inbox) {
    return (const dp_header *)(const void *)inbox;
}

/* The payload of the message in the inbox (the configuration in dp_init is at the inbox
 * itself, not here). */
static inline const uint8_t *dp_inbox_payload(const uint8_t *inbox) {
    return inbox + DP_HEADER_BYTES;
}

/* Whether the message answers an earlier one. */
static inline int dp_is_reply(const dp_header *h) { return (h->flags & DP_FLAG_REPLY) != 0; }

/*
 * Batches (optional export dp_on_batch; docs/agent-abi.md "Batches"). An agent that
 * exports dp_on_batch(count) may be handed up to 32 queued messages in one call, which
 * saves a guest entry per message. Walk them with dp_batch_start and dp_batch_next: each
 * dp_batch_next marks its message as the one being handled (dp_reply answers it; it has
 * its own send budget and time limit). Return 0 when all are handled; or stop at a message
 * that fails and return its error code: it gets a failure reply, and the messages after it
 * stay queued and come back, in order, in a later call.
 *
 *   DP_EXPORT("dp_on_batch") int32_t dp_on_batch(int32_t count) {
 *       dp_batch batch = dp_batch_start(inbox, count);
 *       for (const dp_header *h; (h = dp_batch_next(&batch)) != 0;) {
 *           int32_t code = handle(h, dp_batch_payload(h), h->payload_len);
 *           if (code != 0) return code;
 *       }
 *       return 0;
 *   }
 */
typedef struct dp_batch {
    uint8_t *inbox;  /* where the host wrote the batch */
    uint8_t *next;   /* the next message's header */
    uint32_t index;  /* the next message's index */
    uint32_t count;  /* messages in the batch */
} dp_batch;

/* Bytes before the first message of a batch: the progress index and the count. */
#define DP_BATCH_PREFIX_BYTES 8

/* A walk over the `count` messages (dp_on_batch's argument) of the batch in `inbox`. */
static inline dp_batch dp_batch_start(uint8_t *inbox, int32_t count) {
    dp_batch batch;
    batch.inbox = inbox;
    batch.next = inbox + DP_BATCH_PREFIX_BYTES;
    batch.index = 0;
    batch.count = count > 0 ? (uint32_t)count : 0;
    return batch;
}

/* The next message's header (its payload follows it: dp_batch_payload), marked as the
 * one being handled; NULL after the last. */
static inline const dp_header *dp_batch_next(dp_batch *batch) {
    if (batch->index >= batch->count) return (const dp_header *)0;
    /* Progress first: the host reads it to know which message a reply answers. */
    __builtin_memcpy(batch->inbox, &batch->index, sizeof batch->index);
    const dp_header *h = (const dp_header *)(const void *)batch->next;
    batch->next += (DP_HEADER_BYTES + h->payload_len + 7u) & ~7u;
    batch->index++;
    return h;
}

/* The payload of a message of a batch (`payload_len` bytes). */
static inline const uint8_t *dp_batch_payload(const dp_header *h) {
    return (const uint8_t *)(const void *)h + DP_HEADER_BYTES;
}

/* Little-endian loads and stores at any alignment. */
static inline uint64_t dp_load_u64(const void *p) {
    uint64_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
static inline uint32_t dp_load_u32(const void *p) {
    uint32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
static inline void dp_store_u64(void *p, uint64_t v) { __builtin_memcpy(p, &v, sizeof v); }
static inline void dp_store_u32(void *p, uint32_t v) { __builtin_memcpy(p, &v, sizeof v); }

#ifdef __cplusplus
}
#endif

#endif /* DATAPLANE_H */
