"""What the Python tests, judges and benches share, in one place: where the
models are, running onnx-opt, ONNX Runtime sessions, and error measures.

Imported as `tests.pyhelpers` with the repo root on the path, which nothing
has to patch: pytest puts it there (pytest.ini, `pythonpath = .`), and
benches and judges run as modules from the root
(`.venv/bin/python -m benches.quant`, `-m tests.judges.ort_compare`).
"""
from .measures import cosine, errors, max_rel_err
from .models import GENERATED, MODELS, ROOT, SUITE, feeds, model_path
from .run import JUDGES, ONNX_OPT, judge, onnx_opt, sh
from .sessions import outputs, rounding_floor, session, time_interleaved

__all__ = [
    "GENERATED", "JUDGES", "MODELS", "ONNX_OPT", "ROOT", "SUITE",
    "cosine", "errors", "feeds", "judge", "max_rel_err", "model_path", "onnx_opt", "outputs", "rounding_floor", "session", "sh", "time_interleaved",
]
