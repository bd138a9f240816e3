//! A `Range` header of any bytes against any length: never a panic, and
//! the parts it picks are within the file, apart and few.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxgate::proto::byte_ranges::{MAX_PARTS, Ranges, select};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    // The first bytes say the length: small ones, where ranges collide
    // with the end, most often.
    let raw = u64::from_le_bytes(data[..8].try_into().unwrap());
    let len = if raw & 1 == 0 { raw >> 1 } else { (raw >> 1) % 512 };
    if let Ranges::Parts(parts) = select(&data[8..], len) {
        assert!(!parts.is_empty() && parts.len() <= MAX_PARTS);
        assert!(parts.iter().all(|&(first, last)| first <= last && last < len));
        let mut sorted = parts.clone();
        sorted.sort_unstable();
        assert!(sorted.windows(2).all(|w| w[0].1 + 1 < w[1].0));
    }
});
