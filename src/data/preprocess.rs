//! `--preprocess SPEC`: how an image becomes an input tensor, written as
//! `key=value` pairs separated by commas, applied in this order:
//!
//! | key | value | what |
//! |---|---|---|
//! | `channels` | `rgb` (default), `bgr`, `gray` | channel order, or one luma channel |
//! | `resize` | `N` or `HxW` | shorter side to N keeping the aspect ratio, or exactly H×W |
//! | `height` | `H` | keep-ratio resize to height H (text lines: the width follows) |
//! | `letterbox` | `N` or `HxW` | keep-ratio fit inside H×W, centred, padded with `pad` |
//! | `pad` | `0`..`255` (default 114) | letterbox padding, in pixel units |
//! | `crop` | `N` or `HxW` | centre crop |
//! | `scale` | `1/255`, `0.5`, ... (default 1) | pixel × scale ... |
//! | `mean`, `std` | `a:b:c` or one value | ... then (x - mean) / std, per channel |
//! | `layout` | `nchw` (default), `nhwc` | tensor layout, batch of 1 |
//!
//! Resizing is bilinear (the `image` crate's triangle filter).

use anyhow::{bail, Context, Result};
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub channels: Channels,
    pub resize: Option<Size>,
    pub height: Option<u32>,
    pub letterbox: Option<(u32, u32)>,
    pub pad: u8,
    pub crop: Option<(u32, u32)>,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub nhwc: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Channels {
    Rgb,
    Bgr,
    Gray,
}

/// `resize=N` (shorter side) or `resize=HxW` (exact).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Size {
    Shorter(u32),
    Exact(u32, u32),
}

impl Preprocess {
    pub fn parse(spec: &str) -> Result<Preprocess> {
        let mut p = Preprocess {
            channels: Channels::Rgb,
            resize: None,
            height: None,
            letterbox: None,
            pad: 114,
            crop: None,
            scale: 1.0,
            mean: vec![0.0],
            std: vec![1.0],
            nhwc: false,
        };
        for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .with_context(|| format!("--preprocess: {part:?} is not key=value"))?;
            let bad = |what: &str| format!("--preprocess {key}={value:?}: expected {what}");
            match key {
                "channels" => {
                    p.channels = match value {
                        "rgb" => Channels::Rgb,
                        "bgr" => Channels::Bgr,
                        "gray" | "grey" => Channels::Gray,
                        _ => bail!(bad("rgb, bgr or gray")),
                    }
                }
                "resize" => {
                    p.resize = Some(match size(value) {
                        Some((h, w)) if value.contains('x') => Size::Exact(h, w),
                        Some((n, _)) => Size::Shorter(n),
                        None => bail!(bad("N or HxW")),
                    })
                }
                "height" => {
                    p.height = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|&h| h > 0)
                            .context(bad("a height"))?,
                    )
                }
                "letterbox" => p.letterbox = Some(size(value).context(bad("N or HxW"))?),
                "crop" => p.crop = Some(size(value).context(bad("N or HxW"))?),
                "pad" => p.pad = value.parse().ok().context(bad("0 to 255"))?,
                "scale" => p.scale = number(value).context(bad("a number or 1/N"))?,
                "mean" => p.mean = list(value).context(bad("a:b:c or one number"))?,
                "std" => {
                    p.std = list(value).context(bad("a:b:c or one number"))?;
                    if p.std.contains(&0.0) {
                        bail!(bad("non-zero values"));
                    }
                }
                "layout" => {
                    p.nhwc = match value {
                        "nchw" => false,
                        "nhwc" => true,
                        _ => bail!(bad("nchw or nhwc")),
                    }
                }
                _ => bail!(
                    "--preprocess: unknown key {key:?} (keys: channels, resize, height, letterbox, \
                     pad, crop, scale, mean, std, layout)"
                ),
            }
        }
        let resizes = [
            p.resize.is_some(),
            p.height.is_some(),
            p.letterbox.is_some(),
        ];
        if resizes.iter().filter(|&&r| r).count() > 1 {
            bail!("--preprocess: give at most one of resize, height, letterbox");
        }
        let c = p.channel_count();
        for (name, v) in [("mean", &p.mean), ("std", &p.std)] {
            if v.len() != 1 && v.len() != c {
                bail!(
                    "--preprocess: {name} has {} values for {c} channel{}",
                    v.len(),
                    if c == 1 { "" } else { "s" }
                );
            }
        }
        Ok(p)
    }

    pub fn channel_count(&self) -> usize {
        if self.channels == Channels::Gray {
            1
        } else {
            3
        }
    }

    /// Pixel value `v` (0..255) of channel `c` as the model sees it.
    pub fn value(&self, v: u8, c: usize) -> f32 {
        let pick = |l: &[f32]| if l.len() == 1 { l[0] } else { l[c] };
        (v as f32 * self.scale - pick(&self.mean)) / pick(&self.std)
    }
}

/// The canonical form (every key, fixed order): recorded in the report so
/// a run can be reproduced.
impl fmt::Display for Preprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ch = match self.channels {
            Channels::Rgb => "rgb",
            Channels::Bgr => "bgr",
            Channels::Gray => "gray",
        };
        write!(f, "channels={ch}")?;
        match self.resize {
            Some(Size::Shorter(n)) => write!(f, ",resize={n}")?,
            Some(Size::Exact(h, w)) => write!(f, ",resize={h}x{w}")?,
            None => {}
        }
        if let Some(h) = self.height {
            write!(f, ",height={h}")?;
        }
        if let Some((h, w)) = self.letterbox {
            write!(f, ",letterbox={h}x{w},pad={}", self.pad)?;
        }
        if let Some((h, w)) = self.crop {
            write!(f, ",crop={h}x{w}")?;
        }
        let join = |v: &[f32]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        write!(
            f,
            ",scale={},mean={},std={},layout={}",
            self.scale,
            join(&self.mean),
            join(&self.std),
            if self.nhwc { "nhwc" } else { "nchw" }
        )
    }
}

/// `N` (square) or `HxW`.
fn size(s: &str) -> Option<(u32, u32)> {
    let (h, w) = match s.split_once('x') {
        Some((h, w)) => (h.parse().ok()?, w.parse().ok()?),
        None => {
            let n = s.parse().ok()?;
            (n, n)
        }
    };
    (h > 0 && w > 0).then_some((h, w))
}

/// A number, or `1/N`.
fn number(s: &str) -> Option<f32> {
    let v = match s.split_once('/') {
        Some((a, b)) => a.parse::<f32>().ok()? / b.parse::<f32>().ok()?,
        None => s.parse().ok()?,
    };
    v.is_finite().then_some(v)
}

fn list(s: &str) -> Option<Vec<f32>> {
    s.split(':').map(number).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        let p = Preprocess::parse(
            "resize=256,crop=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,scale=1/255,layout=nchw,channels=rgb",
        )
        .unwrap();
        assert_eq!(p.resize, Some(Size::Shorter(256)));
        assert_eq!(p.crop, Some((224, 224)));
        assert!((p.value(255, 0) - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert_eq!(
            p.to_string(),
            "channels=rgb,resize=256,crop=224x224,scale=0.003921569,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=nchw"
        );
        assert_eq!(Preprocess::parse(&p.to_string()).unwrap(), p);
        let l = Preprocess::parse("letterbox=640,pad=0,channels=bgr,layout=nhwc").unwrap();
        assert_eq!((l.letterbox, l.pad, l.nhwc), (Some((640, 640)), 0, true));
        let h = Preprocess::parse("height=48,channels=gray,mean=0.5,std=0.5,scale=1/255").unwrap();
        assert_eq!((h.height, h.channel_count()), (Some(48), 1));
        for (bad, says) in [
            ("resize=abc", "N or HxW"),
            ("color=rgb", "unknown key"),
            ("resize=4,height=4", "at most one"),
            ("mean=1:2", "2 values for 3 channels"),
            ("std=0", "non-zero"),
            ("crop", "not key=value"),
        ] {
            let e = format!("{:#}", Preprocess::parse(bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
