//! orderbook: a limit order book for one instrument, with price-time priority.
//!
//! Messages (all little-endian; replies to this agent are ignored):
//!
//! - `request` with a 24-byte order `{order_id u64, price i64 (ticks), qty u32,
//!   side u8 (0 buy, 1 sell), 3 bytes padding}`: matches it against the other side, best
//!   price first and, within a price, oldest first, at the resting order's price; what is
//!   left rests on the book at the order's price. Replies `inform` with
//!   `{filled_qty u32, remaining_qty u32, fill_count u32, pad u32}` followed by
//!   `fill_count` fills of 24 bytes `{maker_order_id u64, price i64, qty u32, pad u32}`.
//!   `remaining_qty` is what rested. If the fills would not fit in one message
//!   (`message_bytes_max`, about 2700 fills by default) the list stops there while
//!   matching goes on: `filled_qty` is always the whole filled quantity.
//!   A malformed order (not 24 bytes, `qty` 0, `side` > 1) is answered `refuse` with an
//!   empty payload (and counts as handled).
//! - `query`: replies `inform` with the best levels
//!   `{bid_price i64, bid_qty u64, ask_price i64, ask_qty u64}` (price and qty 0 for an
//!   empty side).
//! - any other message that is not a reply: `not-understood`, empty payload.
//!
//! There is no cancel: orders leave the book only by being filled. Order ids are the
//! client's; they are reported back, not checked for uniqueness. If memory runs out the
//! order is rejected before matching with error 2 (its sender gets a `failure`), and the
//! book is unchanged.
//!
//! Layout: each side is a `Vec` of price levels sorted so that the best level is the last
//! element (bids ascending, asks descending): the best price is found in O(1), an emptied
//! best level is popped in O(1), and a new level is placed by binary search (near the top
//! of the book, where most orders land, the insert shifts few levels). Orders live in
//! one slab of 16-byte nodes with a free list, and each level chains its orders in a FIFO
//! list through the slab. The slab grows by fixed chunks of 4096 nodes (64 KiB) that never
//! move, so a growing book costs no copying (no latency spike, no doubling: nearly all of
//! the memory limit can hold orders). After warm-up a message allocates nothing: levels,
//! nodes and the reply buffer reuse their capacity.

use dataplane_agent::{export_agent, max_payload, reply, Agent, Message, Performative, SendError};

/// "No node": the end of a list.
const NIL: u32 = u32::MAX;
/// Bytes of an order.
const ORDER_BYTES: usize = 24;
/// Bytes of the reply's summary.
const SUMMARY_BYTES: usize = 16;
/// Bytes of one fill.
const FILL_BYTES: usize = 24;
/// Error: memory for the order could not be reserved.
const OUT_OF_MEMORY: i32 = 2;
/// Nodes per slab chunk (a power of two): 64 KiB of nodes.
const CHUNK_SHIFT: u32 = 12;
const CHUNK: usize = 1 << CHUNK_SHIFT;

/// A resting order: a slab slot. `next` chains the level's FIFO, or the free list.
#[derive(Clone, Copy)]
struct Node {
    order_id: u64,
    qty: u32,
    next: u32,
}

/// The order slab: chunks of `CHUNK` nodes, each allocated once with its full capacity
/// and only pushed to, so nodes never move. Node `i` is `chunks[i / CHUNK][i % CHUNK]`.
struct Slab {
    chunks: Vec<Vec<Node>>,
    /// Head of the free list (slots of filled orders), or `NIL`.
    free: u32,
}

impl Slab {
    #[inline(always)]
    fn get(&mut self, index: u32) -> &mut Node {
        &mut self.chunks[(index >> CHUNK_SHIFT) as usize][index as usize & (CHUNK - 1)]
    }

    /// Makes sure `insert` will not allocate: a free slot, or room in the last chunk, or a
    /// new chunk.
    fn reserve(&mut self) -> Result<(), i32> {
        let full = match self.chunks.last() {
            Some(chunk) => chunk.len() == CHUNK,
            None => true,
        };
        if self.free == NIL && full {
            let mut chunk = Vec::new();
            chunk.try_reserve_exact(CHUNK).map_err(|_| OUT_OF_MEMORY)?;
            self.chunks.try_reserve(1).map_err(|_| OUT_OF_MEMORY)?;
            self.chunks.push(chunk);
        }
        Ok(())
    }

    /// Stores `node`; after `reserve`.
    #[inline]
    fn insert(&mut self, node: Node) -> u32 {
        if self.free != NIL {
            let index = self.free;
            let slot = self.get(index);
            let next = slot.next;
            *slot = node;
            self.free = next;
            return index;
        }
        let chunks = self.chunks.len();
        let chunk = &mut self.chunks[chunks - 1];
        let index = ((chunks - 1) << CHUNK_SHIFT) + chunk.len();
        chunk.push(node);
        index as u32
    }

    /// Returns slot `index` to the free list.
    #[inline]
    fn remove(&mut self, index: u32) {
        let free = self.free;
        self.get(index).next = free;
        self.free = index;
    }
}

/// A price level: its total quantity and the FIFO of its orders (oldest at `head`).
#[derive(Clone, Copy)]
struct Level {
    price: i64,
    qty: u64,
    head: u32,
    tail: u32,
}

/// The side of an order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Buy,
    Sell,
}

/// A decoded order.
struct Order {
    order_id: u64,
    price: i64,
    qty: u32,
    side: Side,
}

impl Order {
    /// Decodes the 24-byte layout; `None` when malformed.
    fn parse(payload: &[u8]) -> Option<Order> {
        let bytes: &[u8; ORDER_BYTES] = payload.try_into().ok()?;
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let qty = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let side = match bytes[20] {
            0 => Side::Buy,
            1 => Side::Sell,
            _ => return None,
        };
        if qty == 0 {
            return None;
        }
        Some(Order {
            order_id: u64_at(0),
            price: u64_at(8) as i64,
            qty,
            side,
        })
    }
}

struct Book {
    /// Ascending by price: the best (highest) bid is last.
    bids: Vec<Level>,
    /// Descending by price: the best (lowest) ask is last.
    asks: Vec<Level>,
    /// The resting orders.
    slab: Slab,
    /// The reply being built; its capacity is kept between messages.
    out: Vec<u8>,
    /// Largest reply payload (`message_bytes_max`).
    out_max: usize,
}

impl Book {
    /// Makes sure resting one more order cannot fail to allocate, so a message either
    /// is rejected up front or runs to completion.
    fn reserve_for(&mut self, side: Side) -> Result<(), i32> {
        self.slab.reserve()?;
        let levels = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        levels.try_reserve(1).map_err(|_| OUT_OF_MEMORY)
    }

    /// Matches `order` and rests the remainder; the reply is left in `self.out`.
    fn execute(&mut self, order: &Order) {
        self.out.clear();
        self.out.extend_from_slice(&[0u8; SUMMARY_BYTES]);
        let fills_max = (self.out_max.saturating_sub(SUMMARY_BYTES) / FILL_BYTES) as u32;
        let mut fill_count = 0u32;
        let mut left = order.qty;

        let (opposite, own) = match order.side {
            Side::Buy => (&mut self.asks, &mut self.bids),
            Side::Sell => (&mut self.bids, &mut self.asks),
        };
        while left > 0 {
            // The best opposite level, if it crosses.
            let level = match opposite.last_mut() {
                Some(level) if crosses(order.side, order.price, level.price) => level,
                _ => break,
            };
            while left > 0 && level.head != NIL {
                let index = level.head;
                let node = self.slab.get(index);
                let qty = node.qty.min(left);
                node.qty -= qty;
                left -= qty;
                level.qty -= u64::from(qty);
                if fill_count < fills_max {
                    let mut fill = [0u8; FILL_BYTES];
                    fill[0..8].copy_from_slice(&node.order_id.to_le_bytes());
                    fill[8..16].copy_from_slice(&level.price.to_le_bytes());
                    fill[16..20].copy_from_slice(&qty.to_le_bytes());
                    self.out.extend_from_slice(&fill);
                    fill_count += 1;
                }
                if node.qty == 0 {
                    // Filled: unlink it and return its slot to the free list.
                    level.head = node.next;
                    self.slab.remove(index);
                }
            }
            if level.head == NIL {
                opposite.pop();
            }
        }

        if left > 0 {
            let node = Node {
                order_id: order.order_id,
                qty: left,
                next: NIL,
            };
            // Room was reserved by `reserve_for`: neither this nor the level insert
            // allocates.
            let index = self.slab.insert(node);
            let at = match order.side {
                Side::Buy => own.binary_search_by(|level| level.price.cmp(&order.price)),
                Side::Sell => own.binary_search_by(|level| order.price.cmp(&level.price)),
            };
            match at {
                Ok(at) => {
                    let level = &mut own[at];
                    self.slab.get(level.tail).next = index;
                    level.tail = index;
                    level.qty += u64::from(left);
                }
                Err(at) => own.insert(
                    at,
                    Level {
                        price: order.price,
                        qty: u64::from(left),
                        head: index,
                        tail: index,
                    },
                ),
            }
        }

        let filled = order.qty - left;
        self.out[0..4].copy_from_slice(&filled.to_le_bytes());
        self.out[4..8].copy_from_slice(&left.to_le_bytes());
        self.out[8..12].copy_from_slice(&fill_count.to_le_bytes());
    }

    /// `{bid_price i64, bid_qty u64, ask_price i64, ask_qty u64}`.
    fn best(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(bid) = self.bids.last() {
            out[0..8].copy_from_slice(&bid.price.to_le_bytes());
            out[8..16].copy_from_slice(&bid.qty.to_le_bytes());
        }
        if let Some(ask) = self.asks.last() {
            out[16..24].copy_from_slice(&ask.price.to_le_bytes());
            out[24..32].copy_from_slice(&ask.qty.to_le_bytes());
        }
        out
    }
}

/// Whether an order on `side` at `price` trades with a resting order at `resting`.
#[inline(always)]
fn crosses(side: Side, price: i64, resting: i64) -> bool {
    match side {
        Side::Buy => resting <= price,
        Side::Sell => resting >= price,
    }
}

impl Agent for Book {
    fn init(_config: &[u8]) -> Result<Self, i32> {
        // `dp_inbox` ran before `dp_init`, so the payload limit is known. The reply
        // buffer gets its full size now (untouched pages cost nothing until written).
        let out_max = max_payload();
        let mut out = Vec::new();
        out.try_reserve_exact(out_max.max(SUMMARY_BYTES))
            .map_err(|_| OUT_OF_MEMORY)?;
        Ok(Book {
            bids: Vec::new(),
            asks: Vec::new(),
            slab: Slab {
                chunks: Vec::new(),
                free: NIL,
            },
            out,
            out_max,
        })
    }

    fn on_message(&mut self, msg: &Message<'_>) -> Result<(), i32> {
        if msg.is_reply() {
            return Ok(());
        }
        let answer = match msg.performative() {
            Performative::Request => match Order::parse(msg.payload()) {
                Some(order) => {
                    self.reserve_for(order.side)?;
                    self.execute(&order);
                    reply(Performative::Inform, &self.out)
                }
                None => reply(Performative::Refuse, &[]),
            },
            Performative::Query => reply(Performative::Inform, &self.best()),
            _ => reply(Performative::NotUnderstood, &[]),
        };
        answer.map_err(SendError::code)
    }
}

export_agent!(Book);
