//! Mutations: bytes, and JSON trees.

use serde_json::{Map, Value};

/// A small fast random generator (xorshift64*): reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Tokens that parsers treat specially: JSON syntax, odd numbers and strings, escapes, and the
/// separators of durations, URLs and commands.
const DICTIONARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "\\udfff",
    "null",
    "true",
    "false",
    "0",
    "-0",
    "1e309",
    "-1e309",
    "1e-400",
    "18446744073709551616",
    "-9223372036854775809",
    "0.5",
    "NaN",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "é",
    "\u{10ffff}",
    "\r\n",
    " ",
    "\t",
    "%",
    "%00",
    "%zz",
    "://",
    "@",
    "?",
    "&",
    "=",
    "#",
    "/",
    "..",
    "[::1]",
    ":0",
    ":65536",
    "ms",
    "s",
    "m",
    "h",
    "d",
    "w",
    "y",
    "1s2",
    "99999999999d",
    "event.",
    "async.",
    "()",
    "!",
    "&&",
    "||",
    "==",
    "in",
    "size(",
    "has(",
    "matches(",
    "'",
    "\"name\"",
    "\"data\"",
    "\"user\"",
    "\"id\"",
    "\"ts\"",
    "\"steps\"",
    "\"after\"",
    "\"async\"",
    "\"wait\"",
    "\"cancel\"",
    "\"triggers\"",
    "\"event\"",
    "\"if\"",
    "\"match\"",
    "\"ttl\"",
    "\"retries\"",
    "\"runtime\"",
    "\"path\"",
    "\"jid\"",
    "\"jobtype\"",
    "\"args\"",
    "\"at\"",
    "\"queue\"",
    "\"body\"",
    "\"headers\"",
    "PUSH ",
    "FETCH ",
    "ACK ",
    "FAIL ",
    "BEAT ",
    "MUTATE ",
    "INFO",
    "HELLO ",
];

/// A mutation of one of `corpus`'s inputs (sometimes spliced with another).
pub fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], json: bool) -> Vec<u8> {
    let mut input = corpus[rng.below(corpus.len())].clone();
    if json
        && rng.below(2) == 0
        && let Ok(mut tree) = serde_json::from_slice::<Value>(&input)
    {
        let donor = serde_json::from_slice::<Value>(&corpus[rng.below(corpus.len())]).ok();
        for _ in 0..=rng.below(3) {
            mutate_tree(rng, &mut tree, donor.as_ref());
        }
        return serde_json::to_vec(&tree).unwrap_or(input);
    }
    for _ in 0..=rng.below(4) {
        mutate_bytes(rng, &mut input, corpus);
    }
    input
}

/// One byte-level mutation.
fn mutate_bytes(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let at = rng.below(input.len() + 1);
    match rng.below(7) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] = rng.next_u64() as u8;
        }
        2 => input.insert(at, rng.next_u64() as u8),
        3 if !input.is_empty() => {
            let len = 1 + rng.below(input.len().min(16));
            let from = rng.below(input.len() - len + 1);
            input.drain(from..from + len);
        }
        4 if !input.is_empty() => {
            // Repeat a slice: deep nesting, long runs.
            let len = 1 + rng.below(input.len().min(8));
            let from = rng.below(input.len() - len + 1);
            let piece = input[from..from + len].to_vec();
            for _ in 0..1 + rng.below(64) {
                input.splice(at..at, piece.iter().copied());
            }
        }
        5 => {
            let token = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
            input.splice(at..at, token.iter().copied());
        }
        _ => {
            // Splice: a piece of another input.
            let other = &corpus[rng.below(corpus.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                let len = 1 + rng.below(other.len() - from);
                input.splice(at..at, other[from..from + len].iter().copied());
            }
        }
    }
}

/// One tree mutation: a random node of `tree` replaced, or an object's keys changed.
fn mutate_tree(rng: &mut Rng, tree: &mut Value, donor: Option<&Value>) {
    let count = count_nodes(tree);
    let target = rng.below(count);
    let mut seen = 0;
    let replacement = odd_value(rng, donor);
    let drop_or_add = rng.below(3) == 0;
    visit(tree, target, &mut seen, &mut |node| match node {
        Value::Object(map) if drop_or_add => {
            if !map.is_empty() && rng.below(2) == 0 {
                let key = map
                    .keys()
                    .nth(rng.below(map.len()))
                    .cloned()
                    .unwrap_or_default();
                map.remove(&key);
            } else {
                let key = DICTIONARY[rng.below(DICTIONARY.len())].trim_matches('"');
                map.insert(key.to_owned(), replacement.clone());
            }
        }
        _ => *node = replacement.clone(),
    });
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Calls `f` on the `target`-th node in pre-order.
fn visit(v: &mut Value, target: usize, seen: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if *seen == target {
        f(v);
        return true;
    }
    *seen += 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|i| visit(i, target, seen, f)),
        Value::Object(map) => map.values_mut().any(|i| visit(i, target, seen, f)),
        _ => false,
    }
}

/// A value parsers may not expect: another type, an extreme number, an odd or long string, an
/// empty container, deep nesting, or a node of `donor`.
fn odd_value(rng: &mut Rng, donor: Option<&Value>) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => serde_json::json!(u64::MAX),
        3 => serde_json::json!(i64::MIN),
        4 => serde_json::json!(-0.0),
        5 => serde_json::json!(1.0e300),
        6 => Value::String(String::new()),
        7 => Value::String("x".repeat(1 + rng.below(70_000))),
        8 => Value::String(DICTIONARY[rng.below(DICTIONARY.len())].to_owned()),
        9 => Value::Array(Vec::new()),
        10 => Value::Object(Map::new()),
        11 => {
            let mut v = Value::Null;
            for _ in 0..1 + rng.below(200) {
                v = Value::Array(vec![v]);
            }
            v
        }
        12 => serde_json::json!(rng.next_u64() as i64 % 1000),
        _ => donor.map_or(Value::Null, |d| {
            let mut seen = 0;
            let mut found = Value::Null;
            let mut copy = d.clone();
            let target = rng.below(count_nodes(d));
            visit(&mut copy, target, &mut seen, &mut |n| found = n.clone());
            found
        }),
    }
}
