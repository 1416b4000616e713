//! The mod-30 wheel of the `prime-count` sieve: which bit holds which number, how a prime's
//! multiples move through the bytes, and the pre-sieve patterns.

/// The residues prime to 30, in bit order, and the gaps from each to the next.
pub const WHEEL: [u64; 8] = [1, 7, 11, 13, 17, 19, 23, 29];
pub const GAP: [usize; 8] = [6, 4, 2, 4, 2, 4, 6, 2];

/// Bit of each residue mod 30 (8 for the residues not prime to 30).
pub const INDEX: [u8; 30] = {
    let mut index = [8u8; 30];
    let mut k = 0;
    while k < 8 {
        index[WHEEL[k] as usize] = k as u8;
        k += 1;
    }
    index
};

/// For a prime `p ≡ WHEEL[r] (mod 30)` and a multiplier `m ≡ WHEEL[w]`:
pub struct Tables {
    /// `mask[r][w]` clears the bit of `p * m`;
    pub mask: [[u8; 8]; 8],
    /// going from `m` to the next `m` moves `(p / 30) * GAP[w] + step[r][w]` bytes;
    pub step: [[usize; 8]; 8],
    /// and from `m ≡ 1` to `m ≡ WHEEL[k]` (same turn) `(p / 30) * (WHEEL[k] - 1) + turn[r][k]`.
    pub turn: [[usize; 8]; 8],
}

pub static T: Tables = {
    let mut t = Tables {
        mask: [[0; 8]; 8],
        step: [[0; 8]; 8],
        turn: [[0; 8]; 8],
    };
    let mut r = 0;
    while r < 8 {
        let pr = WHEEL[r] as usize;
        let mut w = 0;
        while w < 8 {
            let nr = pr * WHEEL[w] as usize % 30;
            t.mask[r][w] = !(1u8 << INDEX[nr]);
            t.step[r][w] = (nr + pr * GAP[w]) / 30;
            t.turn[r][w] = pr * WHEEL[w] as usize / 30;
            w += 1;
        }
        r += 1;
    }
    t
};

/// Mask keeping the bits of the byte based at `byte_base` whose numbers lie in `[lo, hi)`.
pub fn range_mask(byte_base: u64, lo: u64, hi: u64) -> u8 {
    (0..8)
        .filter(|&k| (lo..hi).contains(&(byte_base + WHEEL[k])))
        .fold(0, |m, k| m | (1 << k))
}

/// The first multiple `p * m` of `p` with `m >= p`, `m` prime to 30 and `p * m >= lo`, and the
/// wheel position of `m`.
pub fn first_multiple(p: u64, lo: u64) -> (u64, usize) {
    let m = p.max(lo.div_ceil(p));
    let r = m % 30;
    // A table, not a search: this runs once per base prime per piece, the setup of every
    // piece, and a search's mispredicted branches were a good part of it.
    let wheel = usize::from(NEXT[r as usize]);
    (p * (m - r + WHEEL[wheel]), wheel)
}

/// For each residue `r` mod 30, the first wheel position `k` with `WHEEL[k] >= r`.
const NEXT: [u8; 30] = {
    let mut next = [0u8; 30];
    let mut r = 0;
    while r < 30 {
        let mut k = 0;
        while WHEEL[k] < r as u64 {
            k += 1;
        }
        next[r] = k as u8;
        r += 1;
    }
    next
};

/// One period of the pattern of `primes`: bit `k` of byte `i` is set when `30 i + WHEEL[k]`
/// has none of them as a factor.
pub fn pattern(primes: &[u64]) -> Vec<u8> {
    let period: u64 = primes.iter().product();
    let mut pattern = vec![0xff; period as usize];
    for &p in primes {
        for n in (p..30 * period).step_by(2 * p as usize) {
            let k = INDEX[(n % 30) as usize];
            if k < 8 {
                pattern[(n / 30) as usize] &= !(1 << k);
            }
        }
    }
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_tables_agree_with_arithmetic() {
        for (r, &residue) in WHEEL.iter().enumerate() {
            let p = 30 * 5 + residue;
            let mut n = p * 31; // m = 31 ≡ 1: a turn starts here
            let start = n / 30;
            for w in 0..8 {
                let m = n / p;
                assert_eq!(m % 30, WHEEL[w]);
                assert_eq!(!T.mask[r][w], 1 << INDEX[(n % 30) as usize]);
                assert_eq!(n / 30 - start, 5 * (WHEEL[w] - 1) + T.turn[r][w] as u64);
                let next = n + p * GAP[w] as u64;
                assert_eq!(next / 30 - n / 30, 5 * GAP[w] as u64 + T.step[r][w] as u64);
                n = next;
            }
            assert_eq!(n / 30 - start, p, "a turn moves p bytes");
        }
    }

    #[test]
    fn patterns_remove_exactly_the_multiples() {
        let primes = [7, 11];
        let pattern = pattern(&primes);
        assert_eq!(pattern.len(), 77);
        for (i, byte) in pattern.iter().enumerate() {
            for (k, &residue) in WHEEL.iter().enumerate() {
                let n = 30 * i as u64 + residue;
                let kept = byte & (1 << k) != 0;
                assert_eq!(kept, !n.is_multiple_of(7) && !n.is_multiple_of(11), "{n}");
            }
        }
    }

    #[test]
    fn first_multiple_skips_multiples_of_2_3_5() {
        assert_eq!(first_multiple(17, 17), (289, 4));
        // 17 * 20 = 340 >= 330; the next m prime to 30 is 23.
        assert_eq!(first_multiple(17, 330), (17 * 23, 6));
        assert_eq!(first_multiple(17, 17 * 31), (17 * 31, 0));
        assert_eq!(first_multiple(17, 17 * 30 + 1), (17 * 31, 0));
    }
}
