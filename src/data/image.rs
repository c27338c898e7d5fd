//! Images to tensors, by a [`Preprocess`] spec: decode (png, jpeg, bmp),
//! pick channels, resize, crop, normalise, lay out as NCHW or NHWC.

use super::preprocess::{Channels, Preprocess, Size};
use crate::runtime::Tensor;
use anyhow::{anyhow, Context, Result};
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Pixel};
use std::path::Path;

type Buffer<P> = ImageBuffer<P, Vec<u8>>;

/// The tensor shape `path` gives under `spec`, reading the file's header
/// only when the size depends on the image (`height`, shorter-side `resize`, none).
pub fn shape(path: &Path, spec: &Preprocess) -> Result<Vec<usize>> {
    let (h, w) = match (spec.crop, spec.letterbox, spec.resize) {
        (Some(hw), _, _) | (None, Some(hw), _) => hw,
        (None, None, Some(Size::Exact(h, w))) => (h, w),
        _ => {
            let (w, h) = image::image_dimensions(path)
                .map_err(|e| anyhow!("cannot read the image header: {e}"))?;
            resized_size((h, w), spec)
        }
    };
    let c = spec.channel_count();
    let (h, w) = (h as usize, w as usize);
    Ok(if spec.nhwc {
        vec![1, h, w, c]
    } else {
        vec![1, c, h, w]
    })
}

/// Size after the resize step of `spec` (before cropping), as (h, w).
fn resized_size((h, w): (u32, u32), spec: &Preprocess) -> (u32, u32) {
    let keep = |nh: f64, nw: f64| ((nh.round() as u32).max(1), (nw.round() as u32).max(1));
    match (spec.resize, spec.height, spec.letterbox) {
        (Some(Size::Exact(rh, rw)), _, _) => (rh, rw),
        (Some(Size::Shorter(n)), _, _) => {
            let r = n as f64 / h.min(w) as f64;
            keep(h as f64 * r, w as f64 * r)
        }
        (_, Some(nh), _) => keep(nh as f64, w as f64 * nh as f64 / h as f64),
        (_, _, Some((lh, lw))) => {
            let r = (lh as f64 / h as f64).min(lw as f64 / w as f64);
            keep(h as f64 * r, w as f64 * r)
        }
        _ => (h, w),
    }
}

/// Decodes `path` and turns it into the tensor `spec` describes.
pub fn load(path: &Path, spec: &Preprocess) -> Result<Tensor> {
    let img = image::ImageReader::open(path)
        .context("cannot open")?
        .with_guessed_format()
        .context("cannot read")?
        .decode()
        .map_err(|e| anyhow!("cannot decode the image: {e}"))?;
    match spec.channels {
        Channels::Gray => to_tensor(&prepare(img.to_luma8(), spec), spec),
        Channels::Rgb | Channels::Bgr => to_tensor(&prepare(img.to_rgb8(), spec), spec),
    }
}

/// Resize (or letterbox), then centre crop.
fn prepare<P>(img: Buffer<P>, spec: &Preprocess) -> Buffer<P>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (h, w) = resized_size((img.height(), img.width()), spec);
    let mut img = if (h, w) == (img.height(), img.width()) {
        img
    } else {
        imageops::resize(&img, w, h, FilterType::Triangle)
    };
    if let Some((lh, lw)) = spec.letterbox {
        let mut canvas = Buffer::<P>::from_pixel(
            lw,
            lh,
            *P::from_slice(&[spec.pad; 4][..P::CHANNEL_COUNT as usize]),
        );
        let (x, y) = ((lw - img.width()) / 2, (lh - img.height()) / 2);
        imageops::replace(&mut canvas, &img, x as i64, y as i64);
        img = canvas;
    }
    if let Some((ch, cw)) = spec.crop {
        let (ch, cw) = (ch.min(img.height()), cw.min(img.width()));
        let (x, y) = ((img.width() - cw) / 2, (img.height() - ch) / 2);
        img = imageops::crop_imm(&img, x, y, cw, ch).to_image();
    }
    img
}

fn to_tensor<P>(img: &Buffer<P>, spec: &Preprocess) -> Result<Tensor>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let c = spec.channel_count();
    let bgr = spec.channels == Channels::Bgr;
    let mut data = vec![0f32; c * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for (k, &v) in p.channels().iter().enumerate().take(c) {
            let ch = if bgr { c - 1 - k } else { k };
            let at = if spec.nhwc {
                (y * w + x) * c + ch
            } else {
                (ch * h + y) * w + x
            };
            data[at] = spec.value(v, ch);
        }
    }
    let shape = if spec.nhwc {
        [1, h, w, c]
    } else {
        [1, c, h, w]
    };
    Tensor::from_f32(&shape, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32) {
        let img =
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 200]));
        img.save(path).unwrap();
    }

    #[test]
    fn shapes_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        png(&p, 20, 10);
        let spec = Preprocess::parse("resize=8,crop=6,scale=1/255").unwrap();
        assert_eq!(shape(&p, &spec).unwrap(), vec![1, 3, 6, 6]);
        let t = load(&p, &spec).unwrap();
        assert_eq!(t.shape(), &[1, 3, 6, 6]);
        let v = t.to_f32_vec().unwrap();
        assert!(
            v[2 * 36..]
                .iter()
                .all(|&x| (x - 200.0 / 255.0).abs() < 1e-3),
            "blue plane"
        );
        // text line: height 5, width follows (20 * 5 / 10)
        let spec = Preprocess::parse("height=5,channels=gray,layout=nhwc").unwrap();
        assert_eq!(shape(&p, &spec).unwrap(), vec![1, 5, 10, 1]);
        assert_eq!(load(&p, &spec).unwrap().shape(), &[1, 5, 10, 1]);
        // letterbox: 20x10 into 8x8 → 8x4 centred, padding rows at the top
        let spec = Preprocess::parse("letterbox=8,pad=7,channels=bgr").unwrap();
        let t = load(&p, &spec).unwrap();
        assert_eq!(t.shape(), &[1, 3, 8, 8]);
        let v = t.to_f32_vec().unwrap();
        assert_eq!(v[0], 7.0);
        assert_eq!(v[3 * 8], 200.0, "bgr: blue first, image starts at row 2");
        std::fs::write(dir.path().join("bad.png"), b"not a png").unwrap();
        let e = format!(
            "{:#}",
            load(&dir.path().join("bad.png"), &spec).unwrap_err()
        );
        assert!(e.contains("cannot decode"), "{e}");
    }
}
