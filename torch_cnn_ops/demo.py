"""The demo: a CNN built only from torch_cnn_ops modules, trained on real data on the CPU.

``python -m torch_cnn_ops demo [--out DIR] [--epochs N] [--world-size W]``

Data: scikit-learn's handwritten digits (1797 images of 8x8 pixels, 16 grey levels, shipped
with the package: no download), a fixed stratified 80/20 split and seed.

The network (``DigitsNet``) shows the library's layers at work:

* a 5x5 convolution initialised from a Gabor filter bank (``tco.filters.gabor_bank``),
  then batch norm;
* a residual block (``tco.models.BasicBlock``: convolutions, batch norm, shortcut);
* max and min pooling side by side (the bright and the dark of each 2x2 window);
* a tiled convolution (``tco.nn.TiledConv2d``: four kernels alternating over a 2x2 grid);
* global average pooling and a linear classifier.

It prints progress bars (tqdm), ``test accuracy: NN.N%`` and the summary table of the
network (``tco.summary``), and saves PNG plots to ``--out``: the training curves, the first
layer's filters before and after training, and the feature maps of one test digit.

``--world-size 2`` trains the same network on two local processes with
``torch.distributed`` (gloo backend): each process takes half of every batch, ``SyncBatchNorm``
computes the batch statistics over both halves and ``DistributedDataParallel`` averages the
gradients, so that every step computes what one process computes on the whole batch (up to
rounding); the path for users who outgrow one process or one machine.
"""

import argparse
import math
import os
import socket
import time
from typing import Dict, List, Optional

import torch
from torch import Tensor

from . import filters, models
from . import nn as tnn
from .summary import summary

SEED = 0
BATCH_SIZE = 64


class MaxMinPool2d(torch.nn.Module):
    """Max and min pooling of the same windows, concatenated along the channels:
    ``(N, C, H, W)`` -> ``(N, 2C, H / k, W / k)``."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.max = tnn.MaxPool2d(kernel_size)
        self.min = tnn.MinPool2d(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.max(x), self.min(x)], dim=1)


class DigitsNet(torch.nn.Module):
    """The demo's network for ``(N, 1, 8, 8)`` digits; output ``(N, 10)`` logits.

    Example::

        >>> DigitsNet()(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.gabor = tnn.Conv2d(1, width, 5, padding=2, bias=False)
        # Gabor kernels at 4 orientations, 2 frequencies and 2 phases (16 filters).
        bank = filters.gabor_bank(orientations=4, frequencies=(0.25, 0.4), size=5)
        filters.init_conv_(self.gabor, bank[:width])
        self.bn = tnn.BatchNorm2d(width)
        self.relu = torch.nn.ReLU()
        self.block = models.BasicBlock(width, width)
        self.pool = MaxMinPool2d(2)
        self.tiled = tnn.TiledConv2d(2 * width, 2 * width, 3, tile_size=2, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(2 * width)
        self.global_pool = tnn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(2 * width, num_classes)

    def features(self, x: Tensor) -> Dict[str, Tensor]:
        """The activations after each stage (for the feature-map plot)."""
        out = {"input": x}
        out["gabor conv + bn"] = x = self.relu(self.bn(self.gabor(x)))
        out["residual block"] = x = self.block(x)
        out["max | min pool"] = x = self.pool(x)
        out["tiled conv + bn"] = x = self.relu(self.bn2(self.tiled(x)))
        return out

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn(self.gabor(x)))
        x = self.pool(self.block(x))
        x = self.relu(self.bn2(self.tiled(x)))
        return self.fc(self.global_pool(x).flatten(1))


def load_digits_split():
    """(x_train, y_train, x_test, y_test): images ``(n, 1, 8, 8)`` scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(torch.arange(len(y)).numpy(), test_size=0.2, random_state=SEED,
                                           stratify=y.numpy())
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def evaluate(model: torch.nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).sum().item()
    model.train()
    return correct / len(y)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(epochs: int, rank: int = 0, world_size: int = 1, progress: bool = True):
    """Trains DigitsNet; in a process group of ``world_size`` each rank takes its slice of
    every batch. Returns (model, initial first-layer weight, history, data)."""
    import torch.distributed as dist
    from tqdm.auto import tqdm

    torch.manual_seed(SEED)
    x_train, y_train, x_test, y_test = load_digits_split()
    model = DigitsNet()
    initial_filters = model.gabor.weight.detach().clone()
    net = model
    if world_size > 1:
        net = tnn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(net)
        model = net.module
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(y_train) / BATCH_SIZE)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, epochs=epochs,
                                                    steps_per_epoch=steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss()
    history: Dict[str, List[float]] = {"loss": [], "train accuracy": [], "test accuracy": []}
    generator = torch.Generator().manual_seed(SEED)
    show = progress and rank == 0
    for _ in tqdm(range(epochs), desc="epochs", disable=not show):
        order = torch.randperm(len(y_train), generator=generator)
        total_loss, correct, seen = 0.0, 0, 0
        for start in tqdm(range(0, len(order), BATCH_SIZE), desc="batches", leave=False, disable=not show):
            batch = order[start:start + BATCH_SIZE]
            if len(batch) < 2 * world_size:  # batch norm needs two values per channel
                continue
            part = batch.tensor_split(world_size)[rank]
            xb, yb = x_train[part], y_train[part]
            logits = net(xb)
            # Scaled so that DDP's average over ranks is the mean over the whole batch.
            loss = loss_fn(logits, yb) * (len(part) * world_size / len(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(part)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(part)
        if world_size > 1:
            sums = torch.tensor([total_loss, correct, seen], dtype=torch.float64)
            dist.all_reduce(sums)
            total_loss, correct, seen = sums.tolist()
        history["loss"].append(total_loss / seen)
        history["train accuracy"].append(correct / seen)
        history["test accuracy"].append(evaluate(model, x_test, y_test))
    return model, initial_filters, history, (x_train, y_train, x_test, y_test)


def save_plots(out: str, model: DigitsNet, initial_filters: Tensor, history, x_test: Tensor) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    paths = []
    epochs = range(1, len(history["loss"]) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, history["loss"], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax2.plot(epochs, [100 * a for a in history["train accuracy"]], marker="o", label="train")
    ax2.plot(epochs, [100 * a for a in history["test accuracy"]], marker="o", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax2.legend()
    fig.tight_layout()
    paths.append(os.path.join(out, "training_curves.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    final = model.gabor.weight.detach()
    n = final.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(n * 0.9, 2.2))
    for row, (weights, label) in enumerate(((initial_filters, "Gabor init"), (final, "trained"))):
        for i in range(n):
            axes[row, i].imshow(weights[i, 0].numpy(), cmap="gray")
            axes[row, i].axis("off")
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    fig.tight_layout()
    paths.append(os.path.join(out, "first_layer_filters.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    model.eval()
    with torch.no_grad():
        maps = model.features(x_test[:1])
    model.train()
    shown = 8
    fig, axes = plt.subplots(len(maps), shown, figsize=(shown * 1.1, len(maps) * 1.2))
    for row, (name, fmap) in enumerate(maps.items()):
        for i in range(shown):
            ax = axes[row, i]
            ax.axis("off")
            if i < fmap.shape[1]:
                ax.imshow(fmap[0, i].numpy(), cmap="viridis")
        axes[row, 0].set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    paths.append(os.path.join(out, "feature_maps.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _report(model, initial_filters, history, data, out: str, seconds: float) -> float:
    x_test = data[2]
    accuracy = history["test accuracy"][-1]
    print(summary(model, (1, 8, 8)))
    for path in save_plots(out, model, initial_filters, history, x_test):
        print(f"saved {path}")
    print(f"trained {len(history['loss'])} epochs in {seconds:.1f} s")
    print(f"test accuracy: {100 * accuracy:.1f}%")
    return accuracy


def _worker(rank: int, world_size: int, port: int, epochs: int, out: str, progress: bool) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        start = time.perf_counter()
        result = train(epochs, rank, world_size, progress)
        if rank == 0:
            _report(*result, out, time.perf_counter() - start)
        # Every rank done before the group is torn down: a gloo peer that leaves first can
        # make the other abort at exit ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run(epochs: int = 15, out: str = "demo_out", world_size: int = 1, progress: bool = True) -> Optional[float]:
    """Trains and reports; returns the test accuracy (None from a multi-process run, whose
    rank 0 prints it)."""
    if world_size == 1:
        start = time.perf_counter()
        result = train(epochs, progress=progress)
        return _report(*result, out, time.perf_counter() - start)
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world_size, _free_port(), epochs, out, progress), nprocs=world_size, join=True)
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="folder for the PNG plots (default: demo_out)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default: 15)")
    parser.add_argument("--world-size", type=int, default=1,
                        help="processes to train with torch.distributed (gloo, SyncBatchNorm); default 1")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
