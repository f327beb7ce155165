//! Guest WebAssembly modules for dataplane, as bytes for the host's tests and benchmarks.
//!
//! - The example agents of `wasm/examples`, compiled by this crate's build script (Rust
//!   with Debian's `rustc` and the SDK of `wasm/sdk/rust`, C with `clang-14` and the
//!   header of `wasm/sdk/c`): [`ECHO_RUST`], [`ECHO_C`], ... or [`by_name`].
//! - The WAT fixtures of `wasm/fixtures`, misbehaving or malformed modules for the host's
//!   error paths, as text (wasmtime compiles WAT with its `wat` feature): [`fixtures`],
//!   or [`fixture`] by name.
//! - The payload formats of the examples, encoded and decoded: [`formats`].
//!
//! What each agent does is in `wasm/README.md`; the contract is `docs/agent-abi.md`.

macro_rules! module {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// `wasm/examples/rust/echo.rs`: replies `inform` with the same payload to every message
/// that is not a reply.
pub const ECHO_RUST: &[u8] = module!("echo_rust.wasm");
/// `wasm/examples/c/echo.c`: the same as [`ECHO_RUST`], in C.
pub const ECHO_C: &[u8] = module!("echo_c.wasm");
/// `wasm/examples/rust/counter.rs`: count and sum of `i64` payloads
/// ([`formats::counter`]).
pub const COUNTER_RUST: &[u8] = module!("counter_rust.wasm");
/// `wasm/examples/c/counter.c`: the same as [`COUNTER_RUST`], in C.
pub const COUNTER_C: &[u8] = module!("counter_c.wasm");
/// `wasm/examples/rust/pingpong.rs`: pongs requests; with config `peer=<name>`, pings
/// the peer on a kick (a non-reply `inform`) and on every pong.
pub const PINGPONG_RUST: &[u8] = module!("pingpong_rust.wasm");
/// `wasm/examples/c/pingpong.c`: the same as [`PINGPONG_RUST`], in C.
pub const PINGPONG_C: &[u8] = module!("pingpong_c.wasm");
/// `wasm/examples/rust/orderbook.rs`: a price-time priority limit order book
/// ([`formats::orderbook`]).
pub const ORDERBOOK_RUST: &[u8] = module!("orderbook_rust.wasm");
/// `wasm/examples/rust/fragile.rs`: a test agent that traps, loops or fails on demand.
pub const FRAGILE_RUST: &[u8] = module!("fragile_rust.wasm");

/// Every built module and its name (the constant's name in lower case).
pub const MODULES: [(&str, &[u8]); 8] = [
    ("echo_rust", ECHO_RUST),
    ("echo_c", ECHO_C),
    ("counter_rust", COUNTER_RUST),
    ("counter_c", COUNTER_C),
    ("pingpong_rust", PINGPONG_RUST),
    ("pingpong_c", PINGPONG_C),
    ("orderbook_rust", ORDERBOOK_RUST),
    ("fragile_rust", FRAGILE_RUST),
];

/// The built module named `name` (`"echo_rust"`, `"counter_c"`, ...: see [`MODULES`]).
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    MODULES
        .iter()
        .find(|(module, _)| *module == name)
        .map(|(_, bytes)| *bytes)
}

/// The WAT fixtures of `wasm/fixtures`, each described in its file's header comment.
pub mod fixtures {
    macro_rules! wat {
        ($file:literal) => {
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/", $file))
        };
    }

    /// `dp_on_message` loops forever: the host must interrupt it (time limit) and restart.
    pub const LOOP: &str = wat!("loop.wat");
    /// `dp_on_message` grows memory a page at a time until `memory.grow` fails, then
    /// traps (`unreachable`).
    pub const MEMORY_BOMB: &str = wat!("memory_bomb.wat");
    /// Like [`MEMORY_BOMB`], but returns error 7 instead of trapping.
    pub const MEMORY_BOMB_ERROR: &str = wat!("memory_bomb_error.wat");
    /// `dp_on_message` executes `unreachable`.
    pub const TRAP: &str = wat!("trap.wat");
    /// Sends itself a 16 MiB payload (inside its memory), expecting -3 (`TOO_LARGE`), and
    /// replies `inform` with the code as `i32` LE.
    pub const HUGE_SEND: &str = wat!("huge_send.wat");
    /// Imports `dataplane_v1.launch_missiles`, which v1 does not define.
    pub const UNKNOWN_IMPORT: &str = wat!("unknown_import.wat");
    /// Imports `wasi_snapshot_preview1.fd_write`.
    pub const WRONG_MODULE: &str = wat!("wrong_module.wat");
    /// Exports no `dp_on_message`.
    pub const MISSING_EXPORT: &str = wat!("missing_export.wat");
    /// `dp_on_message` takes an `i64`.
    pub const BAD_SIGNATURE: &str = wat!("bad_signature.wat");
    /// Sends its sender 100000 empty `inform`s (or n, from a 4-byte payload) and counts
    /// the codes; a `query` replies with the counts (8 x `u32` LE: code 0, -1 ... -6,
    /// other).
    pub const SEND_STORM: &str = wat!("send_storm.wat");
    /// `dp_init` returns 3.
    pub const INIT_FAILS: &str = wat!("init_fails.wat");
    /// A well-behaved echo written in WAT (no toolchain needed); `dp_on_stop` logs
    /// `echo.wat: stop` at info level.
    pub const ECHO: &str = wat!("echo.wat");
    /// A start function that loops forever.
    pub const START_LOOP: &str = wat!("start_loop.wat");
    /// 32 MiB of initial memory, over the default `memory_bytes_max`.
    pub const BIG_MEMORY: &str = wat!("big_memory.wat");
    /// `dp_inbox` returns 0.
    pub const INBOX_ZERO: &str = wat!("inbox_zero.wat");
    /// Has a memory but does not export it.
    pub const NO_MEMORY: &str = wat!("no_memory.wat");
    /// Exports a shared memory (threads), which the ABI excludes. Note that wasmtime
    /// validates it when threads are enabled: the host has to refuse it itself.
    pub const SHARED_MEMORY: &str = wat!("shared_memory.wat");

    /// `not_wasm.bin`: bytes that are neither a wasm binary nor WAT text (nor UTF-8).
    pub const NOT_WASM: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/not_wasm.bin"
    ));

    /// Every WAT fixture and its name (the file name without `.wat`).
    pub const ALL: [(&str, &str); 17] = [
        ("loop", LOOP),
        ("memory_bomb", MEMORY_BOMB),
        ("memory_bomb_error", MEMORY_BOMB_ERROR),
        ("trap", TRAP),
        ("huge_send", HUGE_SEND),
        ("unknown_import", UNKNOWN_IMPORT),
        ("wrong_module", WRONG_MODULE),
        ("missing_export", MISSING_EXPORT),
        ("bad_signature", BAD_SIGNATURE),
        ("send_storm", SEND_STORM),
        ("init_fails", INIT_FAILS),
        ("echo", ECHO),
        ("start_loop", START_LOOP),
        ("big_memory", BIG_MEMORY),
        ("inbox_zero", INBOX_ZERO),
        ("no_memory", NO_MEMORY),
        ("shared_memory", SHARED_MEMORY),
    ];
}

/// The WAT fixture named `name` (`"loop"` or `"loop.wat"`; see [`fixtures::ALL`]).
pub fn fixture(name: &str) -> Option<&'static str> {
    let name = name.strip_suffix(".wat").unwrap_or(name);
    fixtures::ALL
        .iter()
        .find(|(fixture, _)| *fixture == name)
        .map(|(_, text)| *text)
}

/// The payload formats of the example agents and fixtures (all little-endian), so tests
/// and benchmarks need not repeat the byte offsets.
pub mod formats {
    /// The counter: `request`/`inform` payloads are one `i64`; `request` and `query`
    /// are answered with [`Totals`].
    pub mod counter {
        /// A number to add: 8 bytes, `i64` LE.
        pub fn number(value: i64) -> [u8; 8] {
            value.to_le_bytes()
        }

        /// The counter's reply: `count u64, sum i64` (16 bytes).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Totals {
            /// Numbers added.
            pub count: u64,
            /// Their sum (wrapping).
            pub sum: i64,
        }

        impl Totals {
            /// Bytes of the encoding.
            pub const BYTES: usize = 16;

            /// Decodes a reply payload; `None` unless it is 16 bytes.
            pub fn decode(payload: &[u8]) -> Option<Totals> {
                if payload.len() != Self::BYTES {
                    return None;
                }
                Some(Totals {
                    count: super::u64_at(payload, 0)?,
                    sum: super::u64_at(payload, 8)? as i64,
                })
            }
        }
    }

    /// The order book: [`Order`] requests answered by [`Execution`]s, `query` answered by
    /// [`Best`].
    pub mod orderbook {
        /// The side of an order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Side {
            /// 0.
            Buy,
            /// 1.
            Sell,
        }

        /// An order: `{order_id u64, price i64, qty u32, side u8, 3 pad}` (24 bytes).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Order {
            /// The client's id, reported to later takers as `maker_order_id`.
            pub order_id: u64,
            /// Limit price in ticks.
            pub price: i64,
            /// Quantity; 0 is refused.
            pub qty: u32,
            /// Buy or sell.
            pub side: Side,
        }

        impl Order {
            /// Bytes of the encoding.
            pub const BYTES: usize = 24;

            /// The request payload.
            pub fn encode(&self) -> [u8; 24] {
                let mut out = [0u8; 24];
                out[0..8].copy_from_slice(&self.order_id.to_le_bytes());
                out[8..16].copy_from_slice(&self.price.to_le_bytes());
                out[16..20].copy_from_slice(&self.qty.to_le_bytes());
                out[20] = match self.side {
                    Side::Buy => 0,
                    Side::Sell => 1,
                };
                out
            }
        }

        /// One fill: `{maker_order_id u64, price i64, qty u32, pad u32}` (24 bytes).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Fill {
            /// The resting order that traded.
            pub maker_order_id: u64,
            /// At the resting order's price.
            pub price: i64,
            /// Quantity traded.
            pub qty: u32,
        }

        /// The reply to an order: `{filled_qty u32, remaining_qty u32, fill_count u32,
        /// pad u32}` then `fill_count` fills.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Execution {
            /// Quantity traded in all.
            pub filled_qty: u32,
            /// Quantity left resting on the book.
            pub remaining_qty: u32,
            /// The fills, oldest maker first at each price, best price first (cut short
            /// if they would not fit in one message; `filled_qty` is still the total).
            pub fills: Vec<Fill>,
        }

        impl Execution {
            /// Decodes a reply payload; `None` if its length does not match `fill_count`.
            pub fn decode(payload: &[u8]) -> Option<Execution> {
                let count = super::u32_at(payload, 8)? as usize;
                if payload.len() != 16 + count * 24 {
                    return None;
                }
                let fills = payload[16..]
                    .chunks_exact(24)
                    .map(|fill| {
                        Some(Fill {
                            maker_order_id: super::u64_at(fill, 0)?,
                            price: super::u64_at(fill, 8)? as i64,
                            qty: super::u32_at(fill, 16)?,
                        })
                    })
                    .collect::<Option<Vec<Fill>>>()?;
                Some(Execution {
                    filled_qty: super::u32_at(payload, 0)?,
                    remaining_qty: super::u32_at(payload, 4)?,
                    fills,
                })
            }
        }

        /// The reply to a `query`: `{bid_price i64, bid_qty u64, ask_price i64,
        /// ask_qty u64}`; an empty side has price and quantity 0.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct Best {
            /// The highest bid.
            pub bid_price: i64,
            /// Quantity resting at it.
            pub bid_qty: u64,
            /// The lowest ask.
            pub ask_price: i64,
            /// Quantity resting at it.
            pub ask_qty: u64,
        }

        impl Best {
            /// Decodes a reply payload; `None` unless it is 32 bytes.
            pub fn decode(payload: &[u8]) -> Option<Best> {
                if payload.len() != 32 {
                    return None;
                }
                Some(Best {
                    bid_price: super::u64_at(payload, 0)? as i64,
                    bid_qty: super::u64_at(payload, 8)?,
                    ask_price: super::u64_at(payload, 16)? as i64,
                    ask_qty: super::u64_at(payload, 24)?,
                })
            }
        }
    }

    /// The `send_storm` fixture's counts: how many sends returned 0, -1, ..., -6 and
    /// anything else.
    pub fn storm_counts(payload: &[u8]) -> Option<[u32; 8]> {
        if payload.len() != 32 {
            return None;
        }
        let mut counts = [0u32; 8];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = u32_at(payload, i * 4)?;
        }
        Some(counts)
    }

    fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
        let word = bytes.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(word.try_into().ok()?))
    }

    fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
        let word = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(word.try_into().ok()?))
    }
}

/// The Rust SDK compiled natively (its host functions are inert stand-ins off wasm32), so
/// `cargo test` runs its unit tests and clippy lints it with the workspace's lints. The
/// guests themselves are built for wasm32 by `build.rs`.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../sdk/rust/dataplane_agent.rs"]
mod sdk;

#[cfg(test)]
mod tests {
    use super::formats::orderbook::{Best, Execution, Order, Side};
    use super::*;

    #[test]
    fn modules_are_wasm_binaries() {
        for (name, bytes) in MODULES {
            assert_eq!(&bytes[..4], b"\0asm", "{name}");
            assert_eq!(by_name(name), Some(bytes));
        }
        assert_eq!(by_name("nope"), None);
    }

    #[test]
    fn fixtures_are_wat_text() {
        for (name, text) in fixtures::ALL {
            assert!(
                text.trim_start().starts_with(";;"),
                "{name} starts with its comment"
            );
            assert!(text.contains("(module"), "{name}");
            assert_eq!(fixture(name), Some(text));
            assert_eq!(fixture(&format!("{name}.wat")), Some(text));
        }
        assert_eq!(fixture("nope"), None);
        assert!(
            fixtures::NOT_WASM.contains(&0xff),
            "not UTF-8, so not WAT either"
        );
        assert_ne!(&fixtures::NOT_WASM[..4], b"\0asm");
    }

    #[test]
    fn formats_round_trip() {
        let order = Order {
            order_id: 7,
            price: -3,
            qty: 10,
            side: Side::Sell,
        };
        let bytes = order.encode();
        assert_eq!(bytes[20], 1);
        assert_eq!(&bytes[8..16], &(-3i64).to_le_bytes());

        let mut reply = vec![0u8; 16 + 24];
        reply[0..4].copy_from_slice(&5u32.to_le_bytes());
        reply[4..8].copy_from_slice(&2u32.to_le_bytes());
        reply[8..12].copy_from_slice(&1u32.to_le_bytes());
        reply[16..24].copy_from_slice(&9u64.to_le_bytes());
        reply[24..32].copy_from_slice(&100i64.to_le_bytes());
        reply[32..36].copy_from_slice(&5u32.to_le_bytes());
        let execution = Execution::decode(&reply).unwrap();
        assert_eq!((execution.filled_qty, execution.remaining_qty), (5, 2));
        assert_eq!(execution.fills.len(), 1);
        assert_eq!(execution.fills[0].maker_order_id, 9);
        assert_eq!(execution.fills[0].price, 100);
        assert!(Execution::decode(&reply[..39]).is_none());

        assert_eq!(Best::decode(&[0; 32]).unwrap().bid_qty, 0);
        let totals = formats::counter::Totals::decode(&[
            1, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255,
        ])
        .unwrap();
        assert_eq!((totals.count, totals.sum), (1, -1));
        assert_eq!(formats::storm_counts(&[0; 32]), Some([0; 8]));
    }
}
