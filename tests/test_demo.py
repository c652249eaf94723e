"""The main job: ``python -m torch_cnn_ops demo`` end to end (a subprocess, as a user runs it)."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

# Where the torch_cnn_ops that the tests import lies (the source tree, or an installed wheel), for
# the child's PYTHONPATH.
ROOT = os.path.dirname(os.path.dirname(importlib.util.find_spec("torch_cnn_ops").origin))
PLOTS = ("training_curves.png", "first_layer_filters.png", "feature_maps.png")


def _demo(tmp_path, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "plots"
    proc = subprocess.run([sys.executable, "-m", "torch_cnn_ops", "demo", "--out", str(out), "--no-progress", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"test accuracy: (\d+\.\d)%", proc.stdout)
    assert match, proc.stdout[-3000:]
    return float(match.group(1)), out, proc.stdout


def _assert_plots(out):
    for name in PLOTS:
        path = out / name
        assert path.is_file(), f"missing {path}"
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo_one_epoch(tmp_path):
    accuracy, out, stdout = _demo(tmp_path, "--epochs", "1")
    assert 10.0 < accuracy <= 100.0  # one epoch already learns (chance is 10%)
    _assert_plots(out)
    # the summary table of the network, with the layers the demo is meant to show
    for layer in ("Conv2d", "BatchNorm2d", "MaxPool2d", "MinPool2d", "TiledConv2d", "AdaptiveAvgPool2d"):
        assert layer in stdout


@pytest.mark.slow
def test_demo_full_reaches_97_percent(tmp_path):
    accuracy, out, _ = _demo(tmp_path)
    assert accuracy >= 97.0
    _assert_plots(out)


def test_demo_two_processes(tmp_path):
    accuracy, out, _ = _demo(tmp_path, "--epochs", "1", "--world-size", "2", timeout=240)
    assert 10.0 < accuracy <= 100.0
    _assert_plots(out)


def test_demo_model_uses_only_library_layers():
    import torch
    import torch_cnn_ops as tco
    from torch_cnn_ops.demo import DigitsNet

    model = DigitsNet()
    allowed = (torch.nn.ReLU, torch.nn.Linear)
    for module in model.modules():
        if len(list(module.children())) == 0:
            assert isinstance(module, allowed) or type(module).__module__.startswith("torch_cnn_ops"), type(module)
    # the first layer starts as the Gabor bank
    bank = tco.filters.gabor_bank(orientations=4, frequencies=(0.25, 0.4), size=5)
    torch.testing.assert_close(model.gabor.weight.detach(), bank[: model.gabor.out_channels].float())
