//! The worker side of `mandelbrot`: escape-time iteration of a tile's pixels, rows spread over
//! the rayon pool, with IEEE `+ - *` only (no `mul_add`, no libm) so every machine agrees to
//! the bit.

use rayon::prelude::*;

use super::{PIXEL_BYTES, Params, Tile};
use crate::{ComputeCtx, ComputeError};

/// Escape radius, squared: large, so the assembler's smooth colouring is accurate.
pub const ESCAPE: f64 = 256.0;

/// About this many iterations between two looks at the cancel flag (a millisecond or two).
const ITERATIONS_PER_CHECK: u64 = 1 << 20;

/// The point of the complex plane at the centre of pixel `(px, py)`:
/// `re = center_re + (px + 0.5 - width / 2) * (scale / width)`,
/// `im = center_im - (py + 0.5 - height / 2) * (scale / width)`.
pub fn point(p: &Params, px: u32, py: u32) -> (f64, f64) {
    let step = p.scale / f64::from(p.width);
    let re = p.center_re + (f64::from(px) + 0.5 - f64::from(p.width) / 2.0) * step;
    let im = p.center_im - (f64::from(py) + 0.5 - f64::from(p.height) / 2.0) * step;
    (re, im)
}

/// Iterates `z -> z^2 + c` from 0: returns the first `i` with `|z_i|^2 > ESCAPE` and that
/// `|z_i|^2`, or `(max_iter, 0.0)` when no `z_i` with `i < max_iter` escapes.
pub fn escape(cr: f64, ci: f64, max_iter: u32) -> (u32, f32) {
    // The main cardioid and the period-2 bulb never escape; skip their long iterations.
    let xq = cr - 0.25;
    let q = xq * xq + ci * ci;
    if q * (q + xq) <= 0.25 * ci * ci || (cr + 1.0) * (cr + 1.0) + ci * ci <= 0.0625 {
        return (max_iter, 0.0);
    }
    let (mut zr, mut zi) = (0.0f64, 0.0f64);
    // Brent-style cycle check: a z seen before exactly means the orbit is periodic and never
    // escapes, so the answer is the same as iterating to the end.
    let (mut seen_r, mut seen_i) = (zr, zi);
    let (mut lap, mut lap_len) = (0u32, 8u32);
    for i in 0..max_iter {
        let (r2, i2) = (zr * zr, zi * zi);
        let m = r2 + i2;
        if m > ESCAPE {
            return (i, m as f32);
        }
        zi = 2.0 * zr * zi + ci;
        zr = r2 - i2 + cr;
        if zr == seen_r && zi == seen_i {
            return (max_iter, 0.0);
        }
        lap += 1;
        if lap == lap_len {
            (seen_r, seen_i, lap) = (zr, zi, 0);
            lap_len *= 2;
        }
    }
    (max_iter, 0.0)
}

/// Computes a tile: 8 bytes per pixel, row-major, the count then `|z|^2`, little-endian.
pub fn render(p: &Params, tile: &Tile, ctx: &ComputeCtx) -> Result<Vec<u8>, ComputeError> {
    let row_bytes = tile.w as usize * PIXEL_BYTES;
    let mut data = vec![0u8; tile.pixels() * PIXEL_BYTES];
    ctx.set_total(tile.pixels() as u64);
    let pixels_per_check = (ITERATIONS_PER_CHECK / u64::from(p.max_iter)).max(1) as usize;
    data.par_chunks_mut(row_bytes)
        .enumerate()
        .try_for_each(|(row, bytes)| {
            let py = tile.y + row as u32;
            for (col, px) in bytes.chunks_exact_mut(PIXEL_BYTES).enumerate() {
                if col % pixels_per_check == 0 {
                    ctx.check()?;
                }
                let (cr, ci) = point(p, tile.x + col as u32, py);
                let (n, m) = escape(cr, ci, p.max_iter);
                px[..4].copy_from_slice(&n.to_le_bytes());
                px[4..].copy_from_slice(&m.to_le_bytes());
            }
            ctx.advance(u64::from(tile.w));
            Ok(())
        })?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, without shortcuts.
    fn plain(cr: f64, ci: f64, max_iter: u32) -> (u32, f32) {
        let (mut zr, mut zi) = (0.0f64, 0.0f64);
        for i in 0..max_iter {
            let m = zr * zr + zi * zi;
            if m > ESCAPE {
                return (i, m as f32);
            }
            (zr, zi) = (zr * zr - zi * zi + cr, 2.0 * zr * zi + ci);
        }
        (max_iter, 0.0)
    }

    #[test]
    fn shortcuts_do_not_change_the_answer() {
        let mut inside = 0;
        for i in 0..120 {
            for j in 0..90 {
                let (cr, ci) = (-2.2 + i as f64 * 0.0271, -1.2 + j as f64 * 0.0269);
                let got = escape(cr, ci, 2000);
                assert_eq!(got, plain(cr, ci, 2000), "c = {cr} + {ci}i");
                inside += usize::from(got.0 == 2000);
            }
        }
        assert!(
            inside > 1000,
            "the grid should cover much of the set: {inside}"
        );
    }

    #[test]
    fn known_points() {
        assert_eq!(escape(0.0, 0.0, 100), (100, 0.0));
        assert_eq!(escape(-1.0, 0.0, 100), (100, 0.0));
        // c = 2: z = 0, 2, 6, 38 (|z|^2 = 1444).
        assert_eq!(escape(2.0, 0.0, 100), (3, 1444.0));
        // c = 0.26 escapes slowly, outside the cardioid.
        assert_eq!(escape(0.26, 0.0, 1000), plain(0.26, 0.0, 1000));
        assert!(escape(0.26, 0.0, 1000).0 < 1000);
    }
}
