//! The coordinator side of `mandelbrot`: colours the tiles' escape data and streams it into a
//! PNG, holding one row-band of tiles (the image's full width, one tile high) at a time.
//!
//! Colour: a smooth (fractional) iteration count `n + 1 - log2(log2 |z|)`, which hides the
//! bands of the plain count, mapped through a cyclic gradient close to Ultra Fractal's default;
//! the inside is black.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use super::{NAME, Params, decode, pixel_records};
use crate::{AppError, Assembled, Assembler};

/// Gradient stops `(position, rgb)` on a cycle of length 1.
const STOPS: [(f64, [f64; 3]); 6] = [
    (0.0, [0.0, 7.0, 100.0]),
    (0.16, [32.0, 107.0, 203.0]),
    (0.42, [237.0, 255.0, 255.0]),
    (0.6425, [255.0, 170.0, 0.0]),
    (0.8575, [0.0, 2.0, 0.0]),
    (1.0, [0.0, 7.0, 100.0]),
];

/// The RGB colour of a pixel from its escape data.
pub fn colour(n: u32, m: f32, max_iter: u32) -> [u8; 3] {
    if n >= max_iter {
        return [0, 0, 0];
    }
    let log2_abs_z = f64::from(m).ln() / 2.0 / std::f64::consts::LN_2;
    let smooth = (f64::from(n) + 1.0 - log2_abs_z.log2()).max(0.0);
    // The square root spreads the colours over both shallow and deep views.
    let t = (smooth.sqrt() / 3.0).fract();
    let i = STOPS
        .iter()
        .rposition(|&(at, _)| at <= t)
        .unwrap_or(0)
        .min(STOPS.len() - 2);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let f = ((t - a) / (b - a)).clamp(0.0, 1.0);
    let mut rgb = [0u8; 3];
    for (k, c) in rgb.iter_mut().enumerate() {
        *c = (ca[k] + (cb[k] - ca[k]) * f).round().clamp(0.0, 255.0) as u8;
    }
    rgb
}

/// A `Write` whose bytes stay reachable after the PNG writer that owns it is finished.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Colours tiles as they come (in row-major order) into a row-band, and writes each complete
/// band's rows to the PNG stream.
pub struct PngAssembler {
    params: Params,
    sink: Sink,
    writer: png::StreamWriter<'static, Sink>,
    /// RGB rows of the current band: `width * 3` bytes per row, `tile` rows.
    band: Vec<u8>,
    next_seq: u64,
}

fn png_error(e: impl std::fmt::Display) -> AppError {
    AppError(format!("{NAME}: PNG encoding failed: {e}"))
}

impl PngAssembler {
    pub fn new(params: Params) -> Result<Self, AppError> {
        let sink = Sink::default();
        let mut encoder = png::Encoder::new(sink.clone(), params.width, params.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let writer = encoder
            .write_header()
            .and_then(png::Writer::into_stream_writer)
            .map_err(png_error)?;
        let band_rows = params.tile.min(params.height) as usize;
        Ok(PngAssembler {
            params,
            sink,
            writer,
            band: vec![0; params.width as usize * 3 * band_rows],
            next_seq: 0,
        })
    }
}

impl Assembler for PngAssembler {
    fn push(&mut self, seq: u64, output: &Value) -> Result<(), AppError> {
        if seq != self.next_seq {
            return Err(AppError(format!(
                "{NAME}: got tile {seq} while expecting tile {}",
                self.next_seq
            )));
        }
        let p = &self.params;
        let tile = p.tile_at(seq);
        let data = decode(p, &tile, output)?;
        let stride = p.width as usize * 3;
        for (i, (n, m)) in pixel_records(&data).enumerate() {
            let (row, col) = (i / tile.w as usize, i % tile.w as usize);
            let at = row * stride + (tile.x as usize + col) * 3;
            self.band[at..at + 3].copy_from_slice(&colour(n, m, p.max_iter));
        }
        self.next_seq += 1;
        if tile.x + tile.w == p.width {
            // The band is complete: its rows go to the PNG, the buffer is reused.
            self.writer
                .write_all(&self.band[..tile.h as usize * stride])
                .map_err(png_error)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Assembled, AppError> {
        if self.next_seq != self.params.unit_count() {
            return Err(AppError(format!(
                "{NAME}: {} of {} tiles were assembled",
                self.next_seq,
                self.params.unit_count()
            )));
        }
        self.writer.finish().map_err(png_error)?;
        let body = std::mem::take(&mut *self.sink.0.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(Assembled {
            content_type: "image/png",
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_is_black_and_outside_is_not() {
        assert_eq!(colour(100, 0.0, 100), [0, 0, 0]);
        let outside = colour(3, 1444.0, 100);
        assert_ne!(outside, [0, 0, 0]);
        // Infinite |z|^2 (a far-away c) still gets a colour.
        assert_ne!(colour(1, f32::INFINITY, 100), [1, 2, 3]);
    }

    #[test]
    fn smooth_colouring_is_continuous_across_bands() {
        // Just past the radius at iteration n ~ just inside it at iteration n + 1, squared.
        let a = colour(10, 256.01, 1000);
        let b = colour(11, 256.01f32 * 256.01, 1000);
        for k in 0..3 {
            assert!(
                (i32::from(a[k]) - i32::from(b[k])).abs() <= 3,
                "{a:?} vs {b:?}"
            );
        }
    }
}
