//! The segmented sieve of Eratosthenes behind `prime-count`.
//!
//! Numbers are stored on a mod-30 wheel: byte `i` of a segment holds 8 bits for the numbers
//! `base + 30 i + {1, 7, 11, 13, 17, 19, 23, 29}` (the only residues prime to 30), so a 32 KiB
//! segment, the size of an L1 data cache, spans almost a million numbers. A segment starts as
//! the AND of a few periodic patterns that already remove the multiples of the primes up to 73;
//! each other base prime `p` then crosses off only `p * m` with `m` prime to 30, eight at a time
//! with offsets that depend only on `p mod 30` (one specialised loop per residue). Primes above
//! a segment's length in bytes visit few segments, so they wait in the bucket of the segment of
//! their next multiple (Oliveira e Silva's bucket sieve) instead of being looked at each time.

use super::wheel::{GAP, INDEX, T, WHEEL, first_multiple, pattern, range_mask};
use crate::{ComputeCtx, ComputeError};

/// Bytes per segment (32 KiB, 983 040 numbers).
const SEG_LOG: u32 = 15;
const SEG: usize = 1 << SEG_LOG;
/// A range's last segment shorter than this joins the one before it. Every segment costs each
/// base prime a visit, however few bytes it holds: short units (a W2 unit is 10.2 segments, cut
/// in two for the threads) paid a nearly empty segment's visits per piece.
const MERGE: usize = SEG / 4;

/// The pre-sieved primes, in groups whose product is the period (in bytes) of a pattern.
const PATTERNS: [&[u64]; 7] = [
    &[7, 11, 13, 17],
    &[19, 23, 29],
    &[31, 37, 41],
    &[43, 47],
    &[53, 59],
    &[61, 67],
    &[71, 73],
];

/// The primes the sieve does not count (2, 3, 5 are off the wheel, the rest are pre-sieved
/// away with their multiples); it only counts numbers from [`FIRST_SIEVED`] on.
pub const PRESIEVED: [u64; 21] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73,
];
pub const FIRST_SIEVED: u64 = 79;

/// What sieving below some bound needs: the base primes (from [`FIRST_SIEVED`] on) and the
/// pre-sieve patterns.
pub struct Sieve {
    /// The bound given to [`Sieve::new`].
    hi: u64,
    primes: Vec<u32>,
    patterns: &'static [Vec<u8>],
}

/// The pre-sieve patterns are the same for every sieve: built once per process (about 0.1 ms,
/// which short units would otherwise pay each time).
static PATTERN_TABLE: std::sync::LazyLock<Vec<Vec<u8>>> =
    std::sync::LazyLock::new(|| PATTERNS.iter().map(|group| pattern(group)).collect());

/// A base prime smaller than a segment, and where its next multiple falls.
struct Small {
    p: u32,
    wheel: u32,
    /// Byte of the next multiple, counted from the current segment's first byte.
    next: usize,
}

/// A base prime waiting in the bucket of the segment of its next multiple.
#[derive(Clone, Copy)]
struct Bucketed {
    p: u32,
    /// Byte in that segment, shifted left by 3, or'ed with the wheel position.
    at: u32,
}

impl Sieve {
    /// Everything needed to sieve ranges below `hi`: base primes up to `sqrt(hi - 1)`.
    pub fn new(hi: u64) -> Self {
        let limit = hi.saturating_sub(1).isqrt();
        let patterns = PATTERN_TABLE.as_slice();
        if limit < FIRST_SIEVED {
            return Sieve {
                hi,
                primes: Vec::new(),
                patterns,
            };
        }
        // The base primes come from the same segmented sieve, seeded by a tiny plain one.
        let seed = Sieve {
            hi,
            primes: small_primes(limit.isqrt())
                .into_iter()
                .filter(|&p| u64::from(p) >= FIRST_SIEVED)
                .collect(),
            patterns,
        };
        let mut primes = Vec::new();
        let collect = |base: u64, seg: &[u8]| {
            for (i, &byte) in seg.iter().enumerate() {
                let mut bits = byte;
                while bits != 0 {
                    let n = base + 30 * i as u64 + WHEEL[bits.trailing_zeros() as usize];
                    primes.push(n as u32);
                    bits &= bits - 1;
                }
            }
        };
        // Without a context there is nothing to cancel.
        let _ = seed.for_each_segment(FIRST_SIEVED, limit + 1, None, collect);
        Sieve {
            hi,
            primes,
            patterns: seed.patterns,
        }
    }

    /// A sieve for ranges below `hi`, shared by the units of a process: consecutive units of a
    /// job need the same base primes, and finding them again costs short units a large part of
    /// their time. Keeps the largest one made so far.
    pub fn shared(hi: u64) -> std::sync::Arc<Sieve> {
        static LAST: std::sync::Mutex<Option<std::sync::Arc<Sieve>>> = std::sync::Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some(sieve) if sieve.hi >= hi => sieve.clone(),
            _ => {
                let sieve = std::sync::Arc::new(Sieve::new(hi));
                *last = Some(sieve.clone());
                sieve
            }
        }
    }

    /// Counts the primes in `[lo, hi)`, where `FIRST_SIEVED <= lo` and `hi` is at most the bound
    /// given to [`Sieve::new`]; checks `ctx` and advances it by `hi - lo` as it goes.
    pub fn count(&self, lo: u64, hi: u64, ctx: Option<&ComputeCtx>) -> Result<u64, ComputeError> {
        let mut count = 0u64;
        let mut done = 0u64;
        self.for_each_segment(lo, hi, ctx, |base, seg| {
            count += popcount(seg);
            if let Some(ctx) = ctx {
                let reached = (base + 30 * seg.len() as u64).clamp(lo, hi) - lo;
                ctx.advance(reached - done);
                done = reached;
            }
        })?;
        Ok(count)
    }

    /// Sieves `[lo, hi)` segment by segment, handing `f` each segment's base (the number of bit
    /// 0 of byte 0) and its bytes, where a set bit is a prime in `[lo, hi)`. Needs
    /// `lo >= FIRST_SIEVED`.
    fn for_each_segment(
        &self,
        lo: u64,
        hi: u64,
        ctx: Option<&ComputeCtx>,
        mut f: impl FnMut(u64, &[u8]),
    ) -> Result<(), ComputeError> {
        debug_assert!(lo >= FIRST_SIEVED);
        if lo >= hi {
            return Ok(());
        }
        let base = lo - lo % 30;
        let bytes = (hi - base).div_ceil(30) as usize;
        let segments = if bytes > SEG && bytes % SEG < MERGE {
            bytes / SEG
        } else {
            bytes.div_ceil(SEG)
        };
        // The segment holding byte `b`, and the byte's place in it (the last segment may be
        // longer than `SEG`).
        let place = |b: usize| {
            let k = (b >> SEG_LOG).min(segments - 1);
            (k, b - k * SEG)
        };
        let used = self
            .primes
            .partition_point(|&p| u64::from(p) * u64::from(p) < hi);
        let primes = &self.primes[..used];
        let split = primes.partition_point(|&p| (p as usize) < SEG);

        // Small primes grouped by residue, so each group runs one specialised loop.
        // Primes spread evenly over the 8 residues: sized once, not grown push by push.
        let per_residue = split / 8 + split / 32 + 8;
        let mut small: [Vec<Small>; 8] = std::array::from_fn(|_| Vec::with_capacity(per_residue));
        for &p in &primes[..split] {
            let (n, wheel) = first_multiple(u64::from(p), lo);
            small[usize::from(INDEX[p as usize % 30])].push(Small {
                p,
                wheel: wheel as u32,
                next: ((n - base) / 30) as usize,
            });
        }
        let mut buckets: Vec<Vec<Bucketed>> = vec![Vec::new(); segments];
        for &p in &primes[split..] {
            let (n, wheel) = first_multiple(u64::from(p), lo);
            let byte = ((n - base) / 30) as usize;
            if byte < bytes {
                let (k, at) = place(byte);
                buckets[k].push(Bucketed {
                    p,
                    at: ((at << 3) | wheel) as u32,
                });
            }
        }
        let mut spare: Vec<Vec<Bucketed>> = Vec::new();

        let mut buffer = vec![0u8; bytes.min(SEG + MERGE)];
        let first_byte = (base / 30) as usize;
        for k in 0..segments {
            if let Some(ctx) = ctx {
                ctx.check()?;
            }
            let len = if k + 1 == segments {
                bytes - k * SEG
            } else {
                SEG
            };
            let seg = &mut buffer[..len];
            self.presieve(seg, first_byte + k * SEG);
            let [g0, g1, g2, g3, g4, g5, g6, g7] = &mut small;
            cross_small::<0>(seg, g0);
            cross_small::<1>(seg, g1);
            cross_small::<2>(seg, g2);
            cross_small::<3>(seg, g3);
            cross_small::<4>(seg, g4);
            cross_small::<5>(seg, g5);
            cross_small::<6>(seg, g6);
            cross_small::<7>(seg, g7);

            let mut list = std::mem::take(&mut buckets[k]);
            for e in &list {
                let (p, r) = (e.p as usize, usize::from(INDEX[e.p as usize % 30]));
                let q = p / 30;
                let (mut b, mut w) = ((e.at >> 3) as usize, (e.at & 7) as usize);
                loop {
                    seg[b] &= T.mask[r][w];
                    b += q * GAP[w] + T.step[r][w];
                    w = (w + 1) & 7;
                    if b >= len {
                        break;
                    }
                }
                let at = k * SEG + b;
                if at < bytes {
                    let (next, at) = place(at);
                    let bucket = &mut buckets[next];
                    if bucket.capacity() == 0
                        && let Some(v) = spare.pop()
                    {
                        *bucket = v;
                    }
                    bucket.push(Bucketed {
                        p: e.p,
                        at: ((at << 3) | w) as u32,
                    });
                }
            }
            list.clear();
            spare.push(list);

            // Drop the numbers of the first and last bytes that lie outside [lo, hi).
            let seg_base = base + 30 * (k * SEG) as u64;
            if k == 0 {
                seg[0] &= range_mask(seg_base, lo, hi);
            }
            if k + 1 == segments {
                seg[len - 1] &= range_mask(seg_base + 30 * (len as u64 - 1), lo, hi);
            }
            f(seg_base, seg);
        }
        Ok(())
    }

    /// Fills a segment whose first byte is the absolute byte `at` with the patterns.
    fn presieve(&self, seg: &mut [u8], at: usize) {
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut offset = at % pattern.len();
            let mut pos = 0;
            while pos < seg.len() {
                let take = (pattern.len() - offset).min(seg.len() - pos);
                let (dst, src) = (&mut seg[pos..pos + take], &pattern[offset..offset + take]);
                if i == 0 {
                    dst.copy_from_slice(src);
                } else {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d &= s);
                }
                pos += take;
                offset = 0;
            }
        }
    }
}

/// Crosses off, in one segment, the multiples of the small primes `p ≡ WHEEL[R] (mod 30)`.
fn cross_small<const R: usize>(seg: &mut [u8], group: &mut [Small]) {
    let len = seg.len();
    for s in group {
        let (p, mut b, mut w) = (s.p as usize, s.next, s.wheel as usize);
        let q = p / 30;
        // Step to the start of a turn of the wheel (m ≡ 1 mod 30)...
        while w != 0 && b < len {
            seg[b] &= T.mask[R][w];
            b += q * GAP[w] + T.step[R][w];
            w = (w + 1) & 7;
        }
        if w == 0 {
            // ...then whole turns (8 multiples, p bytes) while they fit...
            let off = |k: usize| q * (WHEEL[k] as usize - 1) + T.turn[R][k];
            let (o1, o2, o3, o4, o5, o6, o7) =
                (off(1), off(2), off(3), off(4), off(5), off(6), off(7));
            // The offsets grow with k: checked once here, so that indexing a turn's window
            // below needs no bounds check per multiple.
            assert!(o1 < o2 && o2 < o3 && o3 < o4 && o4 < o5 && o5 < o6 && o6 < o7);
            while b + o7 < len {
                let turn = &mut seg[b..=b + o7];
                turn[0] &= T.mask[R][0];
                turn[o1] &= T.mask[R][1];
                turn[o2] &= T.mask[R][2];
                turn[o3] &= T.mask[R][3];
                turn[o4] &= T.mask[R][4];
                turn[o5] &= T.mask[R][5];
                turn[o6] &= T.mask[R][6];
                turn[o7] &= T.mask[R][7];
                b += p;
            }
            // ...and the rest one at a time.
            while b < len {
                seg[b] &= T.mask[R][w];
                b += q * GAP[w] + T.step[R][w];
                w = (w + 1) & 7;
            }
        }
        s.next = b - len;
        s.wheel = w as u32;
    }
}

fn popcount(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let whole: u64 = (&mut words)
        .map(|w| u64::from(u64::from_le_bytes(w.try_into().unwrap_or_default()).count_ones()))
        .sum();
    whole
        + words
            .remainder()
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum::<u64>()
}

/// Every prime up to `limit` (a plain sieve, for small limits).
pub fn small_primes(limit: u64) -> Vec<u32> {
    let limit = limit as usize;
    if limit < 2 {
        return Vec::new();
    }
    let mut composite = vec![false; limit + 1];
    let mut primes = Vec::new();
    for n in 2..=limit {
        if !composite[n] {
            primes.push(n as u32);
            for m in (n * n..=limit).step_by(n) {
                composite[m] = true;
            }
        }
    }
    primes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An independent reference: a plain (unsegmented, no wheel) sieve of `[lo, hi)`.
    pub(crate) fn naive_count(lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return 0;
        }
        let mut prime = vec![true; (hi - lo) as usize];
        for n in lo..hi.min(2) {
            prime[(n - lo) as usize] = false;
        }
        for p in small_primes((hi - 1).isqrt()) {
            let p = u64::from(p);
            let mut m = (p * p).max(lo.div_ceil(p) * p);
            while m < hi {
                prime[(m - lo) as usize] = false;
                m += p;
            }
        }
        prime.iter().filter(|&&b| b).count() as u64
    }

    #[test]
    fn small_primes_are_right() {
        assert_eq!(small_primes(30), [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(small_primes(1_000_000).len(), 78_498);
        assert!(small_primes(1).is_empty());
        let below: Vec<u64> = small_primes(FIRST_SIEVED)
            .iter()
            .map(|&p| u64::from(p))
            .collect();
        assert_eq!(below[..PRESIEVED.len()], PRESIEVED);
        assert_eq!(below[PRESIEVED.len()], FIRST_SIEVED);
    }

    #[test]
    fn base_primes_match_the_plain_sieve() {
        let hi = 3_000_000_021u64;
        let sieve = Sieve::new(hi);
        let plain: Vec<u32> = small_primes((hi - 1).isqrt())
            .into_iter()
            .filter(|&p| u64::from(p) >= FIRST_SIEVED)
            .collect();
        assert_eq!(sieve.primes, plain);
    }

    #[test]
    fn buckets_handle_primes_larger_than_a_segment() {
        // Base primes reach 2 * 10^6, far above a segment (32768 bytes), and the ranges span
        // several segments.
        for lo in [4_000_000_000_000u64, 3_999_997_000_001] {
            let hi = lo + 3_000_001;
            let sieve = Sieve::new(hi);
            assert_eq!(sieve.count(lo, hi, None).unwrap(), naive_count(lo, hi));
        }
    }

    #[test]
    fn a_short_last_segment_joins_the_one_before() {
        // Lengths just below, at and just above the point where the last segment stops joining
        // the one before, from one to three segments; high enough for bucketed base primes.
        let lo = 40_000_000_000u64 + 7;
        let sieve = Sieve::new(lo + 4 * 30 * SEG as u64);
        for segments in 1..=3u64 {
            for tail in [0, 1, MERGE as u64 - 1, MERGE as u64, MERGE as u64 + 1] {
                for nudge in [0u64, 29] {
                    let hi = lo + 30 * (segments * SEG as u64 + tail) - nudge;
                    assert_eq!(
                        sieve.count(lo, hi, None).unwrap(),
                        naive_count(lo, hi),
                        "{segments} segments, tail {tail} bytes, nudge {nudge}"
                    );
                }
            }
        }
    }
}
