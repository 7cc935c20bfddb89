//! Neon-looking identifiers, drawn from the emulator's seeded random source so that a given seed
//! always yields the same ids.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

const ADJECTIVES: &[&str] = &[
    "amber",
    "bold",
    "calm",
    "crimson",
    "dawn",
    "damp",
    "eager",
    "fancy",
    "floral",
    "frosty",
    "gentle",
    "gold",
    "hidden",
    "icy",
    "jolly",
    "lively",
    "lucky",
    "mild",
    "misty",
    "noisy",
    "odd",
    "plain",
    "proud",
    "quiet",
    "rapid",
    "round",
    "rusty",
    "shy",
    "silent",
    "small",
    "snowy",
    "solitary",
    "spring",
    "still",
    "sweet",
    "tiny",
    "twilight",
    "wandering",
    "wild",
    "young",
];

const NOUNS: &[&str] = &[
    "bird",
    "bonus",
    "breeze",
    "brook",
    "butterfly",
    "cake",
    "cell",
    "cherry",
    "cloud",
    "credit",
    "darkness",
    "dew",
    "dream",
    "dust",
    "feather",
    "field",
    "fire",
    "flower",
    "fog",
    "forest",
    "frog",
    "glade",
    "grass",
    "haze",
    "hill",
    "lake",
    "leaf",
    "meadow",
    "moon",
    "morning",
    "mountain",
    "night",
    "pine",
    "pond",
    "rain",
    "river",
    "sea",
    "shadow",
    "sky",
    "smoke",
    "snow",
    "star",
    "sun",
    "surf",
    "thunder",
    "tree",
    "voice",
    "water",
    "wave",
    "wind",
];

fn words(rng: &mut ChaCha8Rng) -> String {
    let a = ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())];
    let n = NOUNS[rng.gen_range(0..NOUNS.len())];
    format!("{a}-{n}")
}

/// A name-like pair of words ("misty-river"), for generated names.
pub fn word_pair(rng: &mut ChaCha8Rng) -> String {
    words(rng)
}

/// `adj-noun-12345678`, like Neon project ids.
pub fn project_id(rng: &mut ChaCha8Rng) -> String {
    format!("{}-{:08}", words(rng), rng.gen_range(0..100_000_000u32))
}

/// `br-adj-noun-123456`.
pub fn branch_id(rng: &mut ChaCha8Rng) -> String {
    format!("br-{}-{:06}", words(rng), rng.gen_range(0..1_000_000u32))
}

/// `ep-adj-noun-123456`.
pub fn endpoint_id(rng: &mut ChaCha8Rng) -> String {
    format!("ep-{}-{:06}", words(rng), rng.gen_range(0..1_000_000u32))
}

/// `snap-adj-noun-123456`.
pub fn snapshot_id(rng: &mut ChaCha8Rng) -> String {
    format!("snap-{}-{:06}", words(rng), rng.gen_range(0..1_000_000u32))
}

/// `org-adj-noun-12345678`.
pub fn org_id(rng: &mut ChaCha8Rng) -> String {
    format!("org-{}-{:08}", words(rng), rng.gen_range(0..100_000_000u32))
}

/// A random (version 4 layout) UUID string.
pub fn uuid(rng: &mut ChaCha8Rng) -> String {
    let mut b: [u8; 16] = rng.gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A 64-character API key secret.
pub fn api_key_secret(rng: &mut ChaCha8Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..64)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A Postgres LSN such as `0/1A2B3C4`.
pub fn lsn(rng: &mut ChaCha8Rng) -> String {
    format!("0/{:X}", rng.gen_range(0x100_0000u32..0xFFF_FFFF))
}

/// A 16-character role password (`npg_` and letters and digits, like Neon's).
pub fn role_password(rng: &mut ChaCha8Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let tail: String = (0..12)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("npg_{tail}")
}
