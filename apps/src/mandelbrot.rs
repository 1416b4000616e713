//! `mandelbrot`: renders a view of the Mandelbrot set as a PNG, one tile per unit.
//!
//! Workers compute raw escape data ([`kernel`]): per pixel the escape iteration (`u32`,
//! `max_iter` for points that never escape) and the final `|z|^2` (`f32`, 0 for points inside),
//! 8 little-endian bytes per pixel in row-major order, base64 in `{"pixels": "..."}`. That is
//! plain IEEE `+ - *`, so every machine returns the same bytes. Colouring needs logarithms, so
//! it happens once, on the coordinator, in the assembler ([`picture`]).

mod kernel;
mod picture;
#[cfg(test)]
mod tests;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{App, AppError, Assembler, ComputeCtx, ComputeError, Plan, parse_params, parse_value};

const NAME: &str = "mandelbrot";

/// Largest accepted `width` and `height`.
pub const MAX_SIDE: u32 = 16_384;
/// Largest accepted `width * height` (64 Mpixels).
pub const MAX_PIXELS: u64 = 1 << 26;
/// Largest accepted `max_iter`.
pub const MAX_ITER: u32 = 100_000;
/// Accepted tile edges.
pub const TILE_RANGE: std::ops::RangeInclusive<u32> = 8..=1024;
/// Bytes per pixel in an output: the iteration count (`u32`) and `|z|^2` (`f32`).
const PIXEL_BYTES: usize = 8;

/// The `mandelbrot` app.
#[derive(Debug, Clone, Copy)]
pub struct Mandelbrot;

/// A job's checked parameters: the image size, the view and the tiling.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    width: u32,
    height: u32,
    center_re: f64,
    center_im: f64,
    /// Width of the view in the complex plane (pixels are square).
    scale: f64,
    max_iter: u32,
    tile: u32,
}

/// A unit: the tile of `w` x `h` pixels whose top-left pixel is `(x, y)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tile {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

impl Tile {
    fn pixels(&self) -> usize {
        self.w as usize * self.h as usize
    }
}

/// A unit's output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Output {
    pixels: String,
}

impl Params {
    fn tiles_x(&self) -> u64 {
        u64::from(self.width.div_ceil(self.tile))
    }

    fn tiles_y(&self) -> u64 {
        u64::from(self.height.div_ceil(self.tile))
    }

    fn unit_count(&self) -> u64 {
        self.tiles_x() * self.tiles_y()
    }

    /// Tile `seq`, in row-major order; the last column and row are narrower.
    fn tile_at(&self, seq: u64) -> Tile {
        let (x, y) = (
            (seq % self.tiles_x()) as u32 * self.tile,
            (seq / self.tiles_x()) as u32 * self.tile,
        );
        Tile {
            x,
            y,
            w: self.tile.min(self.width - x),
            h: self.tile.min(self.height - y),
        }
    }

    /// The sequence number of `tile` if it is exactly one of this job's tiles.
    fn seq_of(&self, tile: &Tile) -> Option<u64> {
        if !tile.x.is_multiple_of(self.tile) || !tile.y.is_multiple_of(self.tile) {
            return None;
        }
        let (tx, ty) = (u64::from(tile.x / self.tile), u64::from(tile.y / self.tile));
        let seq = ty * self.tiles_x() + tx;
        (tx < self.tiles_x() && ty < self.tiles_y() && self.tile_at(seq) == *tile).then_some(seq)
    }
}

/// Parses and checks the parameters.
fn checked(params: &Value) -> Result<Params, AppError> {
    let p: Params = parse_params(NAME, params)?;
    let err = |msg: String| Err(AppError(format!("{NAME}: {msg}")));
    for (field, side) in [("width", p.width), ("height", p.height)] {
        if !(1..=MAX_SIDE).contains(&side) {
            return err(format!("{field} ({side}) must be between 1 and {MAX_SIDE}"));
        }
    }
    if u64::from(p.width) * u64::from(p.height) > MAX_PIXELS {
        return err(format!(
            "width * height ({} x {}) must be at most 2^26 pixels",
            p.width, p.height
        ));
    }
    for (field, v) in [("center_re", p.center_re), ("center_im", p.center_im)] {
        if !v.is_finite() {
            return err(format!("{field} must be a finite number"));
        }
    }
    if !(p.scale.is_finite() && p.scale > 0.0) {
        return err(format!(
            "scale ({}) must be a finite number above 0",
            p.scale
        ));
    }
    if !(1..=MAX_ITER).contains(&p.max_iter) {
        return err(format!(
            "max_iter ({}) must be between 1 and {MAX_ITER}",
            p.max_iter
        ));
    }
    if !TILE_RANGE.contains(&p.tile) {
        return err(format!(
            "tile ({}) must be between {} and {}",
            p.tile,
            TILE_RANGE.start(),
            TILE_RANGE.end()
        ));
    }
    Ok(p)
}

/// Parses a unit and checks that it is one of this job's tiles.
fn checked_tile(p: &Params, unit: &Value) -> Result<Tile, AppError> {
    let tile: Tile = parse_value(&format!("{NAME} unit"), unit)?;
    if p.seq_of(&tile).is_none() {
        return Err(AppError(format!(
            "{NAME}: unit {{x: {}, y: {}, w: {}, h: {}}} is not a tile of this job",
            tile.x, tile.y, tile.w, tile.h
        )));
    }
    Ok(tile)
}

/// Decodes and checks a tile's output: exactly `8 * w * h` bytes, counts within `max_iter`, and
/// `|z|^2` 0 for the inside and past the escape radius for the rest.
fn decode(p: &Params, tile: &Tile, output: &Value) -> Result<Vec<u8>, AppError> {
    let out: Output = parse_value(&format!("{NAME} output"), output)?;
    let bytes = tile.pixels() * PIXEL_BYTES;
    // Refuse wrong sizes before decoding anything.
    if out.pixels.len() != bytes.div_ceil(3) * 4 {
        return Err(AppError(format!(
            "{NAME}: pixels has {} base64 characters, expected {} for a {}x{} tile",
            out.pixels.len(),
            bytes.div_ceil(3) * 4,
            tile.w,
            tile.h
        )));
    }
    let data = STANDARD
        .decode(&out.pixels)
        .map_err(|e| AppError(format!("{NAME}: pixels is not base64: {e}")))?;
    if data.len() != bytes {
        return Err(AppError(format!(
            "{NAME}: pixels decodes to {} bytes, expected {bytes}",
            data.len()
        )));
    }
    for (i, (n, m)) in pixel_records(&data).enumerate() {
        let plausible = if n == p.max_iter {
            m == 0.0
        } else {
            n >= 1 && n < p.max_iter && m >= kernel::ESCAPE as f32
        };
        if !plausible {
            return Err(AppError(format!(
                "{NAME}: pixel {i} of the tile has iteration {n} and |z|^2 {m}, impossible \
                 with max_iter {}",
                p.max_iter
            )));
        }
    }
    Ok(data)
}

/// The `(iterations, |z|^2)` records of an output's bytes.
fn pixel_records(data: &[u8]) -> impl Iterator<Item = (u32, f32)> + '_ {
    data.chunks_exact(PIXEL_BYTES).map(|c| {
        let n = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let m = f32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        (n, m)
    })
}

struct TilePlan {
    params: Params,
}

impl Plan for TilePlan {
    fn unit_count(&self) -> u64 {
        self.params.unit_count()
    }

    fn unit(&self, seq: u64) -> Value {
        json!(self.params.tile_at(seq))
    }

    fn unit_work(&self, seq: u64) -> f64 {
        self.params.tile_at(seq).pixels() as f64 / 1e4
    }
}

impl App for Mandelbrot {
    fn name(&self) -> &'static str {
        NAME
    }

    fn result_type(&self) -> &'static str {
        "image/png"
    }

    fn plan(&self, params: &Value) -> Result<Box<dyn Plan>, AppError> {
        Ok(Box::new(TilePlan {
            params: checked(params)?,
        }))
    }

    fn compute(
        &self,
        params: &Value,
        unit: &Value,
        ctx: &ComputeCtx,
    ) -> Result<Value, ComputeError> {
        let failed = |e: AppError| ComputeError::Failed(e.0);
        let p = checked(params).map_err(failed)?;
        let tile = checked_tile(&p, unit).map_err(failed)?;
        let data = kernel::render(&p, &tile, ctx)?;
        Ok(json!({ "pixels": STANDARD.encode(data) }))
    }

    fn check_output(&self, params: &Value, unit: &Value, output: &Value) -> Result<(), AppError> {
        let p = checked(params)?;
        let tile = checked_tile(&p, unit)?;
        decode(&p, &tile, output).map(drop)
    }

    fn max_output_bytes(&self, params: &Value, unit: &Value) -> usize {
        // `{"pixels":"<base64 of 8 bytes per pixel>"}`: a tile's exact size, plus the braces.
        match checked(params).and_then(|p| checked_tile(&p, unit)) {
            Ok(tile) => (tile.pixels() * PIXEL_BYTES).div_ceil(3) * 4 + 64,
            Err(_) => crate::DEFAULT_MAX_OUTPUT_BYTES,
        }
    }

    fn assembler(&self, params: &Value) -> Result<Box<dyn Assembler>, AppError> {
        Ok(Box::new(picture::PngAssembler::new(checked(params)?)?))
    }
}
