//! The converters: each rewrites one operator across one schema change.

use super::*;

/// Squeeze, Unsqueeze (13), ReduceSum (13), the other Reduce ops (18): the
/// `axes` attribute becomes input 1. Without `axes` (or with an empty list,
/// which meant "all" too) the input stays omitted: Squeeze then squeezes
/// every 1, a Reduce op with `noop_with_empty_axes=0` reduces every axis,
/// as before. Unsqueeze requires `axes`.
pub(super) fn axes_to_input(cx: &Cx, w: &mut Work) -> Result<()> {
    let Some(attr) = w.take_attr("axes") else {
        ensure!(
            w.op.op_type != "Unsqueeze",
            "Unsqueeze without axes is not valid"
        );
        return Ok(());
    };
    let axes = ints(&attr).unwrap_or_default().to_vec();
    if !axes.is_empty() || w.op.op_type == "Unsqueeze" {
        w.feed(
            cx,
            1,
            "axes",
            Tensor::from_i64(vec![axes.len() as i64], &axes),
        );
    }
    Ok(())
}

/// Split-13: the `split` attribute becomes input 1.
pub(super) fn split_to_input(cx: &Cx, w: &mut Work) -> Result<()> {
    if let Some(attr) = w.take_attr("split") {
        let split = ints(&attr).unwrap_or_default().to_vec();
        if !split.is_empty() {
            w.feed(
                cx,
                1,
                "split",
                Tensor::from_i64(vec![split.len() as i64], &split),
            );
        }
    }
    Ok(())
}

/// Split-18 wants either the `split` input or `num_outputs`: without the
/// input, `num_outputs` is the number of outputs (equal parts, as before).
pub(super) fn split_18(_: &Cx, w: &mut Work) -> Result<()> {
    let has_split = w.fed.contains(&1) || (w.op.arity > 1 && w.g.input(w.id, 1).is_some());
    if !has_split && w.op.attr("num_outputs").is_none() {
        let n = w.g.node(w.id).outputs.len() as i64;
        w.set_attr(Attribute::int("num_outputs", n));
    }
    Ok(())
}

/// Slice-10: the `starts`, `ends` and `axes` attributes become inputs 1, 2
/// and 3 (int64); the bounds are clamped as before, and steps are 1.
pub(super) fn slice_attrs_to_inputs(cx: &Cx, w: &mut Work) -> Result<()> {
    for (slot, name) in [(1, "starts"), (2, "ends"), (3, "axes")] {
        match w.take_attr(name) {
            Some(a) => {
                let v = ints(&a).unwrap_or_default().to_vec();
                w.feed(cx, slot, name, Tensor::from_i64(vec![v.len() as i64], &v));
            }
            None => ensure!(slot == 3, "Slice without {name} is not valid"),
        }
    }
    Ok(())
}

/// Dropout-10 types its `mask` output bool (it had the input's type): only a
/// Dropout whose mask nothing reads converts unchanged.
pub(super) fn dropout_mask_10(_: &Cx, w: &mut Work) -> Result<()> {
    let mask = Outlet::new(w.id, 1);
    ensure!(
        w.g.node(w.id).outputs.len() < 2 || !w.g.is_used(mask),
        "Dropout whose mask is read (typed bool from opset 10) has no conversion"
    );
    Ok(())
}

/// Dropout-12: the `ratio` attribute becomes input 1 (a float scalar).
pub(super) fn dropout_ratio_to_input(cx: &Cx, w: &mut Work) -> Result<()> {
    if let Some(attr) = w.take_attr("ratio") {
        let AttrValue::Float(r) = attr.value else {
            bail!("Dropout ratio is not a float");
        };
        w.feed(cx, 1, "ratio", Tensor::from_f32(vec![], &[r]));
    }
    Ok(())
}

/// A scalar of a floating-point type, from an f32 attribute value.
pub(super) fn float_scalar(t: DataType, v: f32) -> Option<Tensor> {
    match t {
        DataType::FLOAT => Some(Tensor::from_f32(vec![], &[v])),
        DataType::DOUBLE => Some(Tensor::new(
            t,
            vec![],
            TensorData::Raw((v as f64).to_le_bytes().to_vec().into()),
        )),
        _ => None,
    }
}

/// Clip-11: `min` and `max` attributes become inputs 1 and 2, of the
/// input's type. Clip-6's defaults (±f32::MAX) are fed explicitly, so ±∞
/// still clips to them.
pub(super) fn clip_attrs_to_inputs(cx: &Cx, w: &mut Work) -> Result<()> {
    let t = w.input_elem(0);
    let min = w.take_attr("min").map_or(f32::MIN, |a| match a.value {
        AttrValue::Float(v) => v,
        _ => f32::MIN,
    });
    let max = w.take_attr("max").map_or(f32::MAX, |a| match a.value {
        AttrValue::Float(v) => v,
        _ => f32::MAX,
    });
    let (Some(lo), Some(hi)) = (
        t.and_then(|t| float_scalar(t, min)),
        t.and_then(|t| float_scalar(t, max)),
    ) else {
        bail!("Clip (changed at opset 11): the input's type is not known to be float or double (run infer-shapes first)");
    };
    w.feed(cx, 1, "min", lo);
    w.feed(cx, 2, "max", hi);
    Ok(())
}

/// Pad-11: the `pads` attribute becomes input 1 and `value` input 2 (of the
/// input's type; omitted when +0.0, the default; -0.0 is kept).
pub(super) fn pad_attrs_to_inputs(cx: &Cx, w: &mut Work) -> Result<()> {
    let Some(pads) = w.take_attr("pads") else {
        bail!("Pad without pads is not valid");
    };
    let pads = ints(&pads).unwrap_or_default().to_vec();
    let value = w.take_attr("value").map_or(0.0, |a| match a.value {
        AttrValue::Float(v) => v,
        _ => 0.0,
    });
    w.feed(
        cx,
        1,
        "pads",
        Tensor::from_i64(vec![pads.len() as i64], &pads),
    );
    if value.to_bits() != 0 {
        let Some(v) = w.input_elem(0).and_then(|t| float_scalar(t, value)) else {
            bail!("Pad (changed at opset 11): a nonzero value on an input not known to be float or double");
        };
        w.feed(cx, 2, "value", v);
    }
    Ok(())
}

/// Softmax, LogSoftmax, Hardmax at 13: see the module doc.
pub(super) fn softmax_one_axis(cx: &Cx, w: &mut Work) -> Result<()> {
    let axis = w.op.attr_int("axis", 1);
    let x = w.g.input(w.id, 0).expect("Softmax has an input");
    let last = axis == -1
        || cx
            .ranks
            .get(&x)
            .copied()
            .is_some_and(|r| (if axis < 0 { axis + r } else { axis }) == r - 1);
    if last {
        if w.op.attr("axis").is_none() {
            w.set_attr(Attribute::int("axis", axis));
        }
        return Ok(());
    }
    // Old definition: flatten to 2-D at `axis`, normalise rows, restore the shape.
    let out = Outlet::new(w.id, 0);
    let mut op = w.op.clone();
    op.set_attr(Attribute::int("axis", 1));
    let shape = w.patch.add_op(
        None,
        Operator::new("Shape", 1, vec![]),
        vec![Some(x.into())],
        &[&w.name(cx, "shape")],
    );
    let flat = w.patch.add_op(
        None,
        Operator::new("Flatten", 1, vec![Attribute::int("axis", axis)]),
        vec![Some(x.into())],
        &[&w.name(cx, "2d")],
    );
    let norm = w.patch.add_op(
        None,
        op,
        vec![Some(Patch::out(flat, 0))],
        &[&w.name(cx, "rows")],
    );
    let back = w.patch.add_op(
        w.g.node(w.id).name.clone(),
        Operator::new("Reshape", 2, vec![]),
        vec![Some(Patch::out(norm, 0)), Some(Patch::out(shape, 0))],
        &[w.g.outlet_name(out)],
    );
    w.patch.shunt(
        out,
        Src::New {
            index: back,
            slot: 0,
        },
    );
    w.patch.remove(w.id);
    w.changed = true;
    w.replaced = true;
    Ok(())
}

/// Opset 11 re-specified `auto_pad` SAME_UPPER/SAME_LOWER: the output is
/// `ceil(input / stride)` (Conv, pools), which the older text only said for
/// stride 1, and ConvTranspose's extra padding moved to the other side.
/// Explicit pads and VALID are unchanged; SAME is refused where the texts
/// differ.
pub(super) fn auto_pad_11(_: &Cx, w: &mut Work) -> Result<()> {
    let same = matches!(
        w.op.attr("auto_pad").map(|a| &a.value),
        Some(AttrValue::String(p)) if p.as_ref().starts_with(b"SAME")
    );
    let strided =
        w.op.attr_ints("strides")
            .is_some_and(|s| s.iter().any(|&s| s != 1));
    ensure!(
        !same || !(strided || w.op.op_type == "ConvTranspose"),
        "{} with auto_pad=SAME_* (re-specified at opset 11) has no conversion",
        w.op.op_type
    );
    Ok(())
}

/// Resize-13 dropped the `tf_half_pixel_for_nn` coordinate mode; roi and
/// scales became optional (compatible).
pub(super) fn resize_13(_: &Cx, w: &mut Work) -> Result<()> {
    if let Some(AttrValue::String(mode)) =
        w.op.attr("coordinate_transformation_mode")
            .map(|a| &a.value)
    {
        ensure!(
            mode.as_ref() != b"tf_half_pixel_for_nn",
            "Resize with coordinate_transformation_mode=tf_half_pixel_for_nn (removed at opset 13) has no conversion"
        );
    }
    Ok(())
}

/// Erf-13 no longer takes integer inputs.
pub(super) fn erf_13(_: &Cx, w: &mut Work) -> Result<()> {
    if let Some(t) = w.input_elem(0) {
        ensure!(
            matches!(
                t,
                DataType::FLOAT | DataType::FLOAT16 | DataType::DOUBLE | DataType::BFLOAT16
            ),
            "Erf on {t} (integer inputs dropped at opset 13) has no conversion"
        );
    }
    Ok(())
}

/// BatchNormalization-14 has the running mean/variance outputs only in
/// training mode; the training outputs of BatchNormalization-9 are refused.
pub(super) fn batchnorm_14(_: &Cx, w: &mut Work) -> Result<()> {
    let extra =
        w.g.node(w.id)
            .outputs
            .iter()
            .skip(1)
            .any(|v| !v.name.is_empty());
    ensure!(
        !extra,
        "BatchNormalization with training outputs (changed at opset 14) has no conversion"
    );
    Ok(())
}

/// RoiAlign-16 added `coordinate_transformation_mode`, default `half_pixel`;
/// RoiAlign-10 behaves as `output_half_pixel`, now written explicitly.
pub(super) fn roialign_16(_: &Cx, w: &mut Work) -> Result<()> {
    if w.op.attr("coordinate_transformation_mode").is_none() {
        w.set_attr(Attribute::new(
            "coordinate_transformation_mode",
            AttrValue::String(bytes::Bytes::from_static(b"output_half_pixel")),
        ));
    }
    Ok(())
}

/// QuantizeLinear-19 wants `y_scale` of `x`'s type: exact when x is float
/// (the scale is), refused when x is int32 or unknown.
pub(super) fn quantize_19(_: &Cx, w: &mut Work) -> Result<()> {
    ensure!(
        w.input_elem(0) == Some(DataType::FLOAT),
        "QuantizeLinear (changed at opset 19) needs x known to be float (run infer-shapes first)"
    );
    Ok(())
}

/// GridSample-20 renamed modes: bilinear → linear, bicubic → cubic.
pub(super) fn gridsample_20(_: &Cx, w: &mut Work) -> Result<()> {
    let renamed: &'static [u8] = match w.op.attr("mode").map(|a| &a.value) {
        Some(AttrValue::String(m)) if m.as_ref() == b"bilinear" => b"linear",
        Some(AttrValue::String(m)) if m.as_ref() == b"bicubic" => b"cubic",
        _ => return Ok(()),
    };
    w.set_attr(Attribute::new(
        "mode",
        AttrValue::String(bytes::Bytes::from_static(renamed)),
    ));
    Ok(())
}
