"""Running onnx-opt and the judges."""
import json
import os
import subprocess
import sys

from .models import ROOT

JUDGES = os.path.join(ROOT, "tests", "judges")
# The binary the tests judge (benches take --onnx-opt instead).
ONNX_OPT = os.environ.get("ONNX_OPT", os.path.join(ROOT, "target", "debug", "onnx-opt"))


def sh(*args):
    """Runs a command from the repo root: (exit code, stdout + stderr)."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=ROOT)
    return r.returncode, r.stdout + r.stderr


def judge(name, *args):
    """Runs the judge tests/judges/`name`.py: (exit code, its output)."""
    return sh(sys.executable, "-m", f"tests.judges.{name}", *args)


def onnx_opt(exe, src, dst, *args):
    """Runs `exe src -o dst args...` with a report beside `dst`, and returns
    the report; a failure raises, with the command and what it printed."""
    report = f"{dst}.json"
    cmd = [str(a) for a in (exe, src, "-o", dst, *args, "--report", report)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{r.stdout}{r.stderr}")
    with open(report) as f:
        return json.load(f)
