//! Whole-job tests of `mandelbrot`: plan, compute, check and assemble.

use std::io::Cursor;

use serde_json::{Value, json};

use super::*;

fn params(width: u32, height: u32, tile: u32) -> Value {
    json!({
        "width": width, "height": height,
        "center_re": -0.5, "center_im": 0.0, "scale": 3.0,
        "max_iter": 200, "tile": tile,
    })
}

fn outputs(params: &Value) -> Vec<(Value, Value)> {
    let plan = Mandelbrot.plan(params).unwrap();
    (0..plan.unit_count())
        .map(|seq| {
            let unit = plan.unit(seq);
            let out = Mandelbrot
                .compute(params, &unit, &ComputeCtx::new())
                .unwrap();
            Mandelbrot.check_output(params, &unit, &out).unwrap();
            (unit, out)
        })
        .collect()
}

fn render_png(params: &Value) -> Vec<u8> {
    let mut asm = Mandelbrot.assembler(params).unwrap();
    for (seq, (_, out)) in outputs(params).iter().enumerate() {
        asm.push(seq as u64, out).unwrap();
    }
    let assembled = asm.finish().unwrap();
    assert_eq!(assembled.content_type, "image/png");
    assembled.body
}

/// Width, height and RGB bytes of a PNG.
fn decode_png(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn tiny_image_decodes_with_black_inside() {
    let (w, h, rgb) = decode_png(&render_png(&params(64, 48, 32)));
    assert_eq!((w, h), (64, 48));
    assert_eq!(rgb.len(), 64 * 48 * 3);
    let pixel = |x: usize, y: usize| &rgb[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
    // Pixel (42, 24) maps to c = 0.0 - 0.023i, deep in the main cardioid.
    let p: Params = checked(&params(64, 48, 32)).unwrap();
    let (cr, ci) = kernel::point(&p, 42, 24);
    assert!(cr.abs() < 0.03 && ci.abs() < 0.03, "{cr} {ci}");
    assert_eq!(pixel(42, 24), [0, 0, 0]);
    // The top-left corner (c = -1.98 + 1.10i) escapes at once: coloured.
    assert_ne!(pixel(0, 0), [0, 0, 0]);
}

#[test]
fn uneven_tiles_make_the_same_png_as_one_tile() {
    let one = render_png(&params(100, 70, 128));
    assert_eq!(
        Mandelbrot.plan(&params(100, 70, 128)).unwrap().unit_count(),
        1
    );
    let many = params(100, 70, 16);
    let plan = Mandelbrot.plan(&many).unwrap();
    assert_eq!(plan.unit_count(), 7 * 5);
    assert_eq!(plan.unit(6), json!({"x": 96, "y": 0, "w": 4, "h": 16}));
    assert_eq!(plan.unit(34), json!({"x": 96, "y": 64, "w": 4, "h": 6}));
    assert_eq!(render_png(&many), one);
    let (w, h, _) = decode_png(&one);
    assert_eq!((w, h), (100, 70));
}

#[test]
fn same_bytes_on_one_and_four_threads() {
    let params = json!({
        "width": 300, "height": 200, "center_re": -0.745, "center_im": 0.11,
        "scale": 0.02, "max_iter": 3000, "tile": 256,
    });
    let unit = json!({"x": 256, "y": 0, "w": 44, "h": 200});
    let compute = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| Mandelbrot.compute(&params, &unit, &ComputeCtx::new()))
            .unwrap()
    };
    let one = compute(1);
    assert_eq!(one, compute(4));
    Mandelbrot.check_output(&params, &unit, &one).unwrap();
}

#[test]
fn check_output_refuses_bad_data() {
    let params = params(20, 10, 8);
    let unit = json!({"x": 16, "y": 8, "w": 4, "h": 2});
    let good = Mandelbrot
        .compute(&params, &unit, &ComputeCtx::new())
        .unwrap();
    assert!(Mandelbrot.check_output(&params, &unit, &good).is_ok());

    let encode = |records: &[(u32, f32)]| {
        let bytes: Vec<u8> = records
            .iter()
            .flat_map(|(n, m)| n.to_le_bytes().into_iter().chain(m.to_le_bytes()))
            .collect();
        json!({ "pixels": STANDARD.encode(bytes) })
    };
    let check = |out: &Value| Mandelbrot.check_output(&params, &unit, out);
    assert!(check(&encode(&[(200, 0.0); 8])).is_ok());
    assert!(check(&encode(&[(5, 300.0); 8])).is_ok());
    assert!(check(&encode(&[(200, 0.0); 7])).is_err(), "too short");
    assert!(check(&encode(&[(200, 0.0); 9])).is_err(), "too long");
    assert!(check(&encode(&[(201, 0.0); 8])).is_err(), "past max_iter");
    assert!(check(&encode(&[(5, 3.0); 8])).is_err(), "not escaped");
    assert!(check(&encode(&[(5, f32::NAN); 8])).is_err(), "NaN");
    assert!(
        check(&json!({"pixels": "!".repeat(88)})).is_err(),
        "not base64"
    );
    assert!(check(&json!({"pixels": 3})).is_err());
    let stray = json!({"x": 12, "y": 8, "w": 4, "h": 2});
    assert!(Mandelbrot.check_output(&params, &stray, &good).is_err());
}

#[test]
fn assembler_wants_every_tile_in_order() {
    let params = params(20, 10, 8);
    let outs = outputs(&params);
    let mut asm = Mandelbrot.assembler(&params).unwrap();
    assert!(asm.push(1, &outs[1].1).is_err());
    asm.push(0, &outs[0].1).unwrap();
    assert!(asm.finish().is_err());
}

#[test]
fn refuses_bad_params() {
    let with = |field: &str, v: Value| {
        let mut p = params(64, 48, 32);
        p[field] = v;
        Mandelbrot.plan(&p).err().map(|e| e.0)
    };
    assert!(with("width", json!(0)).unwrap().contains("width"));
    assert!(with("height", json!(16_385)).unwrap().contains("height"));
    assert!(with("scale", json!(0.0)).unwrap().contains("scale"));
    assert!(with("scale", json!(-1.0)).unwrap().contains("scale"));
    assert!(with("max_iter", json!(0)).unwrap().contains("max_iter"));
    assert!(
        with("max_iter", json!(100_001))
            .unwrap()
            .contains("max_iter")
    );
    assert!(with("tile", json!(7)).unwrap().contains("tile"));
    assert!(with("tile", json!(1025)).unwrap().contains("tile"));
    assert!(
        with("center_re", json!("x"))
            .unwrap()
            .contains("invalid params")
    );
    assert!(with("colour", json!(1)).unwrap().contains("unknown field"));
    let mut big = params(16_384, 16_384, 1024);
    assert!(Mandelbrot.plan(&big).err().unwrap().0.contains("2^26"));
    big["height"] = json!(4096);
    assert_eq!(Mandelbrot.plan(&big).unwrap().unit_count(), 16 * 4);
}

#[test]
fn cancel_stops_the_compute() {
    let params = json!({
        "width": 1024, "height": 1024, "center_re": -0.5, "center_im": 0.0,
        "scale": 3.0, "max_iter": 100_000, "tile": 1024,
    });
    let unit = json!({"x": 0, "y": 0, "w": 1024, "h": 1024});
    let ctx = ComputeCtx::new();
    ctx.cancel();
    assert_eq!(
        Mandelbrot.compute(&params, &unit, &ctx),
        Err(ComputeError::Canceled)
    );
}
