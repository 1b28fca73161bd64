#!/usr/bin/python3
"""Write the model cards (models/<name>/README.md) of patchline's own models
from what training measured (metrics.json) and the bundles' config.json.

    /usr/bin/python3 models/train/cards.py        (the last step of make models)
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world as W  # noqa: E402

COMMON_DATA = """\
**Data.** The synthetic world (`internal/synth`), written by `patchline synth`
through the decode stage's own preprocessing: 384×384 source frames → 96×96
(bilinear stretch) → 144 patch tokens of 8×8×3. Training: seeds 100000–{seed_last},
{seq_frames} consecutive frames each ({train_frames} frames), 3 objects (of 12
colour×shape classes) bouncing, braking to a stop, leaving and entering, on
plain/gradient/noise/texture backgrounds under changing light. Validation
(the figures below): seeds 50000–50015. Held-out test seeds 1..999 are used
only by the Go tests (`test/models`, part of `make test`), whose figures are
in the README."""


def data(m):
    """The data paragraph; sequences default to the 240×64 set framegen and scene-vit use."""
    seqs, frames = m.get("train_sequences", 240), m.get("train_seq_frames", 64)
    return COMMON_DATA.format(seed_last=100000 + seqs - 1, seq_frames=frames, train_frames=m["train_frames"])


def threads(m):
    """How the training ran."""
    if m.get("blas_threads"):
        return f"2 CPU cores ({m['threads']} torch thread, OpenBLAS on {m['blas_threads']})"
    if m["threads"] == 1:
        return "1 CPU thread, while another model trained on the machine's other core"
    return f"{m['threads']} CPU threads"


def scratch_time(m):
    if "train_seconds_scratch" not in m:
        return ""
    note = f" ({m['scratch_note']})" if m.get("scratch_note") else ""
    return f" From scratch with the same budget (the same steps): {m['train_seconds_scratch']} s{note}."


def fmt(x):
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def load(name):
    d = os.path.join(W.ROOT, "models", name)
    return d, json.load(open(os.path.join(d, "metrics.json"))), json.load(open(os.path.join(d, "config.json")))


def size(d, *files):
    return sum(os.path.getsize(os.path.join(d, f)) for f in files) / 1e6


def framegen():
    d, m, c = load("framegen")
    card = f"""# framegen — next-frame prediction and anomaly heatmaps

A generative patch Transformer: from the last {c['num_frames']} frames' patch tokens
(`patch_tokens` float32 [B, {c['num_frames']}, 144, 192], normalised) it predicts
the next frame's tokens (`next_tokens` [B, 144, 192]). The per-patch mean
squared error between prediction and the frame that came is the anomaly
heatmap; the frame score is the mean of its {c['patchline']['anomaly_top_k']} largest patch errors
(`patchline.anomaly_top_k`: robust to one noisy patch), compared with
`patchline.anomaly_threshold` ({c['patchline']['anomaly_threshold']:.4f}: the
99.5th percentile of validation scores on normal video). It learnt motion
between frames {c['patchline']['frame_interval_ms']} ms apart (`patchline.frame_interval_ms`: the
synthetic world at 5 fps); generate scores only cameras whose frames are
about that far apart.

**Architecture.** Video encoder: the 3 frames' tokens of each patch position
are concatenated (576 values) and embedded (linear → {c['hidden_size']}), plus
learned positions, then {c['num_hidden_layers']} pre-LN Transformer blocks (4 heads,
MLP {2 * c['hidden_size']}); a linear head predicts the change from the last frame.
{m['parameters']:,} parameters; `model.onnx` {size(d, 'model.onnx'):.1f} MB (opset 14).

**Training.** Self-supervised pretraining on unlabelled video (no labels
used): {m['steps']} AdamW steps of {m['batch']} windows, lr 1e-3 cosine, weight decay
0.05, seed 1; {m['train_seconds']} s on {threads(m)} (Debian python3-torch 1.13).
This encoder is what scene-vit and caption are fine-tuned from.

{data(m)}

**Validation metrics** (normal video, and video with injected anomalies
every 12 frames):

| | |
| --- | --- |
| next-frame MSE (normalised) | {m['val_mse']:.5f} |
| copy-last-frame baseline MSE | {m['copy_last_frame_mse']:.5f} |
| AUROC teleport | {m['auroc_teleport']:.4f} |
| AUROC reverse (mid-field) | {m['auroc_reverse']:.4f} |
| AUROC spawn (from nowhere) | {m['auroc_spawn']:.4f} |

Retrain: `make models` (or `/usr/bin/python3 models/train/pretrain_framegen.py`).
`testdata/` holds two input windows and torch's outputs for them; a Go test
requires ONNX Runtime to match within 1e-4.
"""
    open(os.path.join(d, "README.md"), "w").write(card)


def gain_table(m, keys, start="framegen"):
    if "from_scratch" not in m:
        rows = [f"| | fine-tuned from {start} | from scratch, same budget |", "| --- | --- | --- |"]
        for label, k in keys:
            rows.append(f"| {label} | {m['fine_tuned'][k]:.4f} | not measured yet |")
        return "\n".join(rows)
    rows = [f"| | fine-tuned from {start} | from scratch, same budget | gain |", "| --- | --- | --- | --- |"]
    for label, k in keys:
        a, b = m["fine_tuned"][k], m["from_scratch"][k]
        rows.append(f"| {label} | {a:.4f} | {b:.4f} | {a - b:+.4f} |")
    return "\n".join(rows)


def scene_vit():
    d, m, c = load("scene-vit")
    card = f"""# scene-vit — per-patch segmentation and scene labels

A ViT over one frame's patch tokens exactly as the decode stage publishes them
(`patch_tokens` float32 [B, 144, 192], normalised as `preprocessor_config.json`
says). Outputs `patch_logits` [B, 144, 13] (background and 12 colour×shape
classes, `id2label`) and `scene_logits` [B, 12] (which classes the frame
shows, sigmoid; `patchline.scene_id2label`). The analyze stage's `segment`
task turns the patch map into connected regions → labelled boxes in source
pixels. This is the default model of `pipeline.yaml`.

**Architecture.** framegen's video encoder fed the frame as a still video
(3 copies, inside the graph), {c['num_hidden_layers']} pre-LN blocks of width
{c['hidden_size']}, 4 heads; a linear per-patch head and a linear head on the
mean-pooled tokens. {m['parameters']:,} parameters; `model.onnx`
{size(d, 'model.onnx'):.1f} MB (opset 14).

**Training.** Fine-tuned from framegen's pretrained encoder with labels:
{m['steps']} AdamW steps of {m['batch']} frames, lr 1e-3 cosine, cross-entropy per patch
(class weights ∝ frequency^-½) + binary cross-entropy on scene labels, seed 2;
{m['train_seconds_fine_tune']} s on {threads(m)}. The same network trained
from scratch with the same budget took {m['train_seconds_scratch']} s.

{data(m)} The per-patch truth is the class of the object
covering most of the patch's 32×32 source pixels if it covers at least a
quarter of them, else background. Regions with a mean score under
`patchline.score_threshold` (0.7) or fewer than `patchline.min_region_patches`
(3) patches are not reported as boxes.

**Validation metrics** (and the gain from pretraining):

{gain_table(m, [('patch macro F1', 'patch_macro_f1'), ('patch accuracy', 'patch_accuracy'), ('scene label accuracy', 'scene_label_accuracy')])}

Retrain: `make models` (or `/usr/bin/python3 models/train/train_scene_vit.py`,
after `pretrain_framegen.py`). `testdata/` holds two frames' tokens and
torch's outputs; Go tests require ONNX Runtime to match within 1e-4 and Go's
tokenization to equal the training script's byte for byte.
"""
    open(os.path.join(d, "README.md"), "w").write(card)


def caption():
    d, m, c = load("caption")
    dec = c["decoder"]
    card = f"""# caption — what happens, in words

A vision encoder over the last {c['num_frames']} frames' patch tokens and a small
GPT-style causal decoder, exported optimum-style: `encoder_model.onnx`
(`patch_tokens` [B, {c['num_frames']}, 144, 192] → `encoder_hidden_states` [B, 144, {c['encoder']['hidden_size']}]),
`decoder_model.onnx` (first step / no cache) and `decoder_with_past_model.onnx`
(one token at a time with explicit `past_key_values.{{l}}.key/value` inputs and
`present.{{l}}.*` outputs: the KV cache), plus a Hugging Face `tokenizer.json`
(WordLevel, {c['vocab_size']} tokens). Captions name every object in view, in
class order: "a red circle moves left; a blue square is still".

**Architecture.** Encoder: framegen's video encoder ({c['encoder']['num_layers']} blocks, width
{c['encoder']['hidden_size']}) with two per-patch heads, the class and the motion of the
object under each patch, whose probabilities are projected back and added
to the hidden states the decoder reads. Decoder: {dec['num_layers']} pre-LN blocks of width {dec['hidden_size']}, {dec['num_heads']} heads
(causal self-attention with KV cache, cross-attention to the encoder, MLP),
learned positions, tied LM head. {m['parameters']:,} parameters; the three graphs
{size(d, 'encoder_model.onnx', 'decoder_model.onnx', 'decoder_with_past_model.onnx'):.1f} MB together (opset 14).

**Training.** Encoder and class head start from scene-vit (framegen's
pretrained encoder fine-tuned on the patch classes), so shapes and colours
are known from the start; the rest from random init. Loss: teacher-forced
cross-entropy plus the two per-patch heads' cross-entropy (weight 1;
background patches weigh 0.1), {m['steps']} AdamW steps of {m['batch']} windows,
lr 1.5e-3 cosine, seed 3; {m['train_seconds_fine_tune']} s on {threads(m)}.{scratch_time(m)}

{data(m)}

**Validation metrics** (greedy decoding; "objects right" = objects in view
named with the right colour, shape and motion):

{gain_table(m, [('objects right', 'objects_right'), ('exact captions', 'exact_captions')], "scene-vit")}

Retrain: `make models` (or `/usr/bin/python3 models/train/train_caption.py`,
after `pretrain_framegen.py` and `train_scene_vit.py`). `testdata/` holds two windows, torch's encoder
output and greedy captions; Go tests require ONNX Runtime to match within
1e-4, Go's greedy decoding to give torch's captions, and decoding with the KV
cache to give exactly the tokens of decoding without it.
"""
    open(os.path.join(d, "README.md"), "w").write(card)


if __name__ == "__main__":
    framegen()
    scene_vit()
    caption()
    print("wrote models/{framegen,scene-vit,caption}/README.md")
