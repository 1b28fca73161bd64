"""The caption word tokenizer: a Hugging Face tokenizers WordLevel model.

The caption grammar is tiny and closed ("a red circle moves left ; a blue
square is still"), so every word is one token:

    [PAD]=0 [BOS]=1 [EOS]=2 [UNK]=3, then WORDS in order (ids 4..19).

write_tokenizer_json(path) writes the tokenizer.json that patchline's Go side
(internal/textgen) and the Hugging Face `tokenizers` library both load:
WordLevel model, Whitespace pre-tokenizer (regex \\w+|[^\\w\\s]+, so "left;"
is "left" ";"), the four special tokens as added tokens, no normalizer, no
post-processor (BOS/EOS are added by the caller), no decoder.

encode(text) and decode(ids) do in Python exactly what the tokenizer.json
does. decode() returns the human-readable text: tokens joined by spaces, then
" ;" written as ";" ("a red circle moves left; a blue square is still").
"""

import json
import re

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
WORDS = [
    "a",
    "red", "green", "blue", "yellow",
    "circle", "square", "triangle",
    "moves", "left", "right", "up", "down", "is", "still",
    ";",
]
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
ID2TOKEN = {i: tok for tok, i in VOCAB.items()}
VOCAB_SIZE = len(VOCAB)

# The Hugging Face Whitespace pre-tokenizer's pattern.
_WHITESPACE = re.compile(r"\w+|[^\w\s]+")
# Special tokens written in the text are matched before pre-tokenization
# (HF "added tokens"), so "[EOS]" is one token, not "[", "EOS", "]".
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def tokenizer_config():
    """The tokenizer.json content as a dict."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": VOCAB[s],
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s in SPECIALS
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": VOCAB, "unk_token": "[UNK]"},
    }


def write_tokenizer_json(path):
    """Write the Hugging Face tokenizer.json to path."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(), f, indent=2, ensure_ascii=False)
        f.write("\n")


def encode(text):
    """Token ids of text (no BOS/EOS added); unknown words become [UNK]."""
    ids = []
    for part in _SPECIAL_SPLIT.split(text):
        if part in VOCAB and part in SPECIALS:
            ids.append(VOCAB[part])
            continue
        for word in _WHITESPACE.findall(part):
            ids.append(VOCAB.get(word, UNK_ID))
    return ids


def decode(ids, skip_special_tokens=True):
    """Human-readable text of ids: stops at nothing, skips special tokens,
    joins words with spaces and writes " ;" as ";"."""
    toks = []
    for i in ids:
        i = int(i)
        if skip_special_tokens and i < len(SPECIALS):
            continue
        toks.append(ID2TOKEN.get(i, "[UNK]"))
    return " ".join(toks).replace(" ;", ";")


if __name__ == "__main__":
    import sys

    write_tokenizer_json(sys.argv[1] if len(sys.argv) > 1 else "tokenizer.json")
