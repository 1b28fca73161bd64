"""Shared pieces of patchline's model training: data sets from the Go
synthetic world, patch tokenization, the video encoder all three models
share, and export helpers.

Data sets are written by `bin/patchline synth` (internal/dataset): the
frames exactly as the decode stage feeds a model, with ground truth. Python
never re-implements the world; it only reads what Go wrote.

Seeds: held-out test seeds are 1..999 (Go tests in `make test` measure the
models on them); validation seeds 50000.. (training-time monitoring);
training seeds 100000... `dataset()` refuses a test seed for training.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("PATCHLINE_BIN", os.path.join(ROOT, "bin", "patchline"))
DATA = os.environ.get("PATCHLINE_DATA", os.path.join(ROOT, ".cache", "data"))
CACHE = os.environ.get("PATCHLINE_MODEL_CACHE", os.path.join(ROOT, ".cache", "models"))

# Model input: decode's resize to 96×96, 8×8 patches → 12×12 = 144 tokens of 192.
WIDTH = HEIGHT = 96
PATCH = 8
GRID = WIDTH // PATCH
N = GRID * GRID
DTOK = PATCH * PATCH * 3
NUM_FRAMES = 3  # the video encoder sees the last 3 frames

TEST_SEEDS = range(1, 1000)
VAL_SEED = 50000
TRAIN_SEED = 100000

MEAN = 0.5
STD = 0.5


def setup(seed):
    # On 2 cores, 1 torch thread with OpenBLAS on 2 (OPENBLAS_NUM_THREADS=2,
    # which make models sets; it must be set before numpy loads) is the
    # fastest measured: 0.39 s per caption step, against 0.9 s with both at
    # 2, when their thread pools fight over the cores.
    torch.set_num_threads(int(os.environ.get("PATCHLINE_TORCH_THREADS", "1")))
    torch.manual_seed(seed)
    np.random.seed(seed)


def threads():
    """How training ran, for metrics.json and the model card."""
    return {"threads": torch.get_num_threads(), "blas_threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0") or 0)}


def dataset(name, seed, sequences, frames, **extra):
    """Generate (once) and load a data set: returns (meta, frames u8 [S,F,H,W,3], classes u8 [S,F,G,G], truth list)."""
    if seed in TEST_SEEDS or any(s in TEST_SEEDS for s in range(seed, seed + sequences)):
        raise ValueError(f"seed {seed}: seeds 1..999 are held out for the Go tests")
    out = os.path.join(DATA, name)
    args = [BIN, "synth", "--seed", str(seed), "--sequences", str(sequences), "--frames", str(frames), "--out", out]
    for k, v in extra.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    stamp = os.path.join(out, "args.json")
    try:
        fresh = json.load(open(stamp)) == args
    except (OSError, ValueError):
        fresh = False
    if not fresh:
        t = time.time()
        subprocess.run(args, check=True)
        write_json(stamp, args)
        log(f"generated {name}: {sequences}x{frames} frames in {time.time() - t:.0f}s")
    meta = json.load(open(os.path.join(out, "meta.json")))
    if (meta["width"], meta["height"], meta["patch_size"]) != (WIDTH, HEIGHT, PATCH):
        raise ValueError(f"{out}: model input {meta['width']}x{meta['height']}/{meta['patch_size']}, want {WIDTH}x{HEIGHT}/{PATCH}")
    fr = np.load(os.path.join(out, "frames.npy")).reshape(sequences, frames, HEIGHT, WIDTH, 3)
    cl = np.load(os.path.join(out, "classes.npy")).reshape(sequences, frames, GRID, GRID)
    truth = [json.loads(line) for line in open(os.path.join(out, "truth.jsonl"))]
    return meta, fr, cl, truth


def tokenize(frames):
    """uint8 [..., H, W, 3] → uint8 [..., N, P·P·3], exactly internal/frame.Tokenize's layout."""
    lead = frames.shape[:-3]
    x = frames.reshape(*lead, GRID, PATCH, GRID, PATCH, 3)
    nd = len(lead)
    perm = list(range(nd)) + [nd, nd + 2, nd + 1, nd + 3, nd + 4]
    return np.ascontiguousarray(x.transpose(perm)).reshape(*lead, N, DTOK)


def normalise(tokens_u8):
    """uint8 tokens → float32, (u/255 − mean)/std, as preprocessor_config.json says."""
    return (torch.from_numpy(np.asarray(tokens_u8)).float() / 255.0 - MEAN) / STD


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.hd ** -0.5, dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.ln1, self.att = nn.LayerNorm(dim), Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.att(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class VideoEncoder(nn.Module):
    """ViT over the patch tokens of the last K frames, stacked per patch.

    tokens [B, K, N, P·P·3] (normalised, oldest first) → hidden [B, N, D].
    Each patch position's K tokens are concatenated and embedded together,
    so one pass over N tokens sees motion. A single frame is fed as K copies
    of itself (a still video), which is how scene-vit reuses the encoder
    pretrained by framegen."""

    def __init__(self, dim=96, layers=3, heads=4, mlp=192, frames=NUM_FRAMES):
        super().__init__()
        self.frames = frames
        self.embed = nn.Linear(frames * DTOK, dim)
        self.pos = nn.Parameter(torch.zeros(1, N, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.dim = dim

    def forward(self, tokens):
        b, k, n, t = tokens.shape
        x = tokens.permute(0, 2, 1, 3).reshape(b, n, k * t)
        x = self.embed(x) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.ln(x)


def params(m):
    return sum(p.numel() for p in m.parameters())


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def update_metrics(out, new):
    """Merge new figures into out/metrics.json (fine-tuning and the
    from-scratch baseline run separately)."""
    path = os.path.join(out, "metrics.json")
    try:
        m = json.load(open(path))
    except (OSError, ValueError):
        m = {}
    m.update(new)
    write_json(path, m)


def preprocessor_config():
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": HEIGHT, "width": WIDTH},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [MEAN] * 3,
        "image_std": [STD] * 3,
        "patch_size": PATCH,
    }


def save_f32(path, t):
    np.ascontiguousarray(t.detach().numpy().astype("<f4")).tofile(path)


def export(model, args, path, inputs, outputs, dynamic):
    torch.onnx.export(model, args, path, input_names=inputs, output_names=outputs,
                      dynamic_axes=dynamic, opset_version=14, do_constant_folding=True)
    log(f"exported {os.path.relpath(path, ROOT)} ({os.path.getsize(path) / 1e6:.2f} MB)")


def macro_f1(pred, true, classes):
    """Macro F1 over the classes the truth has (as test/models computes it)."""
    f1s = []
    for c in range(classes):
        tp = int(((pred == c) & (true == c)).sum())
        fp = int(((pred == c) & (true != c)).sum())
        fn = int(((pred != c) & (true == c)).sum())
        if tp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def cosine_lr(opt, step, steps, lr, warmup=50):
    f = min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, step / steps)))
    for g in opt.param_groups:
        g["lr"] = lr * max(f, 0.02)


if __name__ == "__main__":
    sys.exit("world.py is a library; run pretrain_framegen.py, train_scene_vit.py or train_caption.py")
