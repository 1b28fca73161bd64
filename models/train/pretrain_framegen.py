#!/usr/bin/python3
"""framegen: self-supervised pretraining of the video encoder by next-frame
prediction on unlabelled synthetic video, exported as models/framegen.

The model sees the last 3 frames' patch tokens and predicts the next frame's
tokens (as a change to the last frame). Its per-patch prediction error is an
anomaly heatmap: trained on normal motion only (bounces, stops, edges), it
lights up where the world does something it cannot predict.

Writes models/framegen/{model.onnx, config.json, preprocessor_config.json,
README.md (model card), testdata/}, and the pretrained encoder to
.cache/models/framegen_encoder.pt for train_scene_vit.py and
train_caption.py.

    /usr/bin/python3 models/train/pretrain_framegen.py     (make models)
"""

import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world as W  # noqa: E402

OUT = os.path.join(W.ROOT, "models", "framegen")
CACHE = W.CACHE
STEPS = int(os.environ.get("FRAMEGEN_STEPS", "2000"))
BATCH = 32
LR = 1e-3
SEED = 1
K = W.NUM_FRAMES
TOP_K = 4  # the frame score is the mean of its TOP_K worst patches


def frame_score(err):
    """[M, N] per-patch errors → [M] frame anomaly scores (mean of the TOP_K largest)."""
    return np.sort(err, axis=1)[:, -TOP_K:].mean(1)


class FrameGen(nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc
        self.head = nn.Linear(enc.dim, W.DTOK)
        nn.init.zeros_(self.head.weight)  # start as "the next frame is the last one"
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens):  # [B, K, N, DTOK] → [B, N, DTOK]
        return tokens[:, -1] + self.head(self.enc(tokens))


def windows(nseq, nframes):
    """(sequence, target frame) pairs with K frames before the target."""
    return [(s, i) for s in range(nseq) for i in range(K, nframes)]


def batch(tok, idx):
    x = np.stack([tok[s, i - K:i] for s, i in idx])
    y = np.stack([tok[s, i] for s, i in idx])
    return W.normalise(x), W.normalise(y)


def patch_errors(model, tok, idx, bs=64):
    out = []
    with torch.no_grad():
        for j in range(0, len(idx), bs):
            x, y = batch(tok, idx[j:j + bs])
            out.append(((model(x) - y) ** 2).mean(-1))
    return torch.cat(out).numpy()  # [M, N]


def auroc(pos, neg):
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    # average ranks of ties
    for v in np.unique(allv):
        m = allv == v
        ranks[m] = ranks[m].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def main():
    W.setup(SEED)
    t0 = time.time()
    _, fr, _, _ = W.dataset("train", W.TRAIN_SEED, 240, 64)
    _, vfr, _, _ = W.dataset("val", W.VAL_SEED, 16, 64)
    tok, vtok = W.tokenize(fr), W.tokenize(vfr)
    anom = {}
    for n, kind in enumerate(["teleport", "reverse", "spawn"]):
        _, afr, _, atr = W.dataset("val-" + kind, W.VAL_SEED + 100 * (n + 1), 8, 64,
                                   anomaly=kind, anomaly_at=8, anomaly_every=12)
        anom[kind] = (W.tokenize(afr), atr)
    gen_time = time.time() - t0

    model = FrameGen(W.VideoEncoder())
    if "--export-only" in sys.argv:
        # Re-evaluate and re-export the last trained weights.
        model.load_state_dict(torch.load(os.path.join(CACHE, "framegen.pt")))
        prev = json.load(open(os.path.join(OUT, "metrics.json")))
        train_time, threads = prev["train_seconds"], prev["threads"]
    else:
        train_time, threads = train(model, tok), torch.get_num_threads()
    finish(model, tok, vtok, anom, train_time, threads, gen_time)
    W.log(f"done in {time.time() - t0:.0f}s")


def train(model, tok):
    W.log(f"framegen: {W.params(model)} parameters, {STEPS} steps of {BATCH}")
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    train_idx = windows(tok.shape[0], tok.shape[1])
    rng = np.random.default_rng(SEED)
    t1 = time.time()
    for step in range(STEPS):
        W.cosine_lr(opt, step, STEPS, LR)
        idx = [train_idx[j] for j in rng.integers(0, len(train_idx), BATCH)]
        x, y = batch(tok, idx)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == STEPS - 1:
            W.log(f"step {step} loss {loss.item():.5f} ({time.time() - t1:.0f}s)")
    os.makedirs(CACHE, exist_ok=True)
    torch.save(model.enc.state_dict(), os.path.join(CACHE, "framegen_encoder.pt"))
    torch.save(model.state_dict(), os.path.join(CACHE, "framegen.pt"))
    return time.time() - t1


def finish(model, tok, vtok, anom, train_time, threads, gen_time):
    model.eval()
    # Copy-last-frame baseline vs the model on validation video.
    vidx = windows(vtok.shape[0], vtok.shape[1])
    err = patch_errors(model, vtok, vidx)
    x, y = batch(vtok, vidx[:256])
    copy_mse = float(((x[:, -1] - y) ** 2).mean())
    model_mse = float(err[:256].mean())
    normal_scores = frame_score(err)
    threshold = float(np.quantile(normal_scores, 0.995))
    metrics = {"val_mse": model_mse, "copy_last_frame_mse": copy_mse, "anomaly_threshold": threshold}
    for kind, (atok, atr) in anom.items():
        idx = windows(atok.shape[0], atok.shape[1])
        scores = frame_score(patch_errors(model, atok, idx))
        lab = np.array([atr[s * atok.shape[1] + i].get("anomaly", "") != "" for s, i in idx])
        metrics["auroc_" + kind] = auroc(scores[lab], scores[~lab])
    W.log(f"metrics {metrics}")

    os.makedirs(os.path.join(OUT, "testdata"), exist_ok=True)
    W.export(model, (torch.zeros(1, K, W.N, W.DTOK),), os.path.join(OUT, "model.onnx"),
             ["patch_tokens"], ["next_tokens"], {"patch_tokens": {0: "batch"}, "next_tokens": {0: "batch"}})
    # Reference outputs for the Go ORT-vs-torch check: two validation windows.
    ref = [vidx[5], vidx[100]]
    xr = np.stack([vtok[s, i - K:i] for s, i in ref])
    xr.astype(np.uint8).tofile(os.path.join(OUT, "testdata", "tokens_u8.bin"))
    with torch.no_grad():
        W.save_f32(os.path.join(OUT, "testdata", "next_f32.bin"), model(W.normalise(xr)))
    W.write_json(os.path.join(OUT, "config.json"), {
        "model_type": "patchline-framegen",
        "architectures": ["PatchlineFrameGen"],
        "num_frames": K,
        "image_size": W.WIDTH,
        "patch_size": W.PATCH,
        "num_channels": 3,
        "hidden_size": model.enc.dim,
        "num_hidden_layers": len(model.enc.blocks),
        "patchline": {
            "task": "framegen",
            "input": "patch_tokens",
            "resize": "stretch",
            "outputs": {"next_tokens": "next_tokens"},
            "anomaly_threshold": threshold,
            "anomaly_top_k": TOP_K,
            # The synthetic world's frames at its 5 fps: motion is learnt per step.
            "frame_interval_ms": 200,
        },
    })
    W.write_json(os.path.join(OUT, "preprocessor_config.json"), W.preprocessor_config())
    W.write_json(os.path.join(OUT, "metrics.json"), {
        **metrics, "parameters": W.params(model), "steps": STEPS, "batch": BATCH,
        "train_seconds": round(train_time), "data_seconds": round(gen_time),
        "threads": threads, "train_frames": int(tok.shape[0] * tok.shape[1]),
        "anomaly_top_k": TOP_K,
    })


if __name__ == "__main__":
    main()
