//! Byte-level mutations: what a flaky download or disk does to a file.

use super::Rng;

pub fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    if out.is_empty() {
        return vec![rng.below(256) as u8];
    }
    match rng.below(4) {
        0 => out.truncate(rng.below(out.len())),
        1 => {
            let at = rng.below(out.len());
            let junk: Vec<u8> = (0..1 + rng.below(16))
                .map(|_| rng.below(256) as u8)
                .collect();
            out.splice(at..at, junk);
        }
        _ => {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(out.len());
                out[at] ^= 1 << rng.below(8);
            }
        }
    }
    out
}
