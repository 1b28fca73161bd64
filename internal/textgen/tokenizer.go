package textgen

import (
	"fmt"
	"strings"
	"sync"

	hftok "github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/pretrained"
)

// Tokenizer is a Hugging Face tokenizer.json loaded with
// github.com/sugarme/tokenizer (pure Go; WordLevel, WordPiece, BPE and
// Unigram models). patchline's caption bundles use a WordLevel model with a
// Whitespace pre-tokenizer (models/train/tokenizer_words.py).
//
// The special token ids are those of [PAD] [BOS] [EOS] [UNK] (or the
// <pad> <s> </s> <unk> spelling), -1 where the vocabulary has none.
type Tokenizer struct {
	PadID, BOSID, EOSID, UNKID int64

	path  string
	mu    sync.Mutex // the library's tokenizer is not documented as goroutine-safe
	tk    *hftok.Tokenizer
	vocab int
}

// LoadTokenizer reads a tokenizer.json. Errors name the file.
func LoadTokenizer(path string) (t *Tokenizer, err error) {
	defer func() {
		// The library type-asserts JSON fields without checks; a malformed
		// file must be an error, not a crash.
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("tokenizer %s: malformed tokenizer.json: %v", path, r)
		}
	}()
	tk, err := pretrained.FromFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	if tk == nil || tk.GetModel() == nil {
		return nil, fmt.Errorf("tokenizer %s: no model in tokenizer.json", path)
	}
	t = &Tokenizer{path: path, tk: tk, vocab: tk.GetVocabSize(true)}
	if t.vocab <= 0 {
		return nil, fmt.Errorf("tokenizer %s: empty vocabulary", path)
	}
	t.PadID = t.special("[PAD]", "<pad>")
	t.BOSID = t.special("[BOS]", "<s>", "<bos>")
	t.EOSID = t.special("[EOS]", "</s>", "<eos>")
	t.UNKID = t.special("[UNK]", "<unk>")
	return t, nil
}

func (t *Tokenizer) special(names ...string) int64 {
	for _, n := range names {
		if id, ok := t.tk.TokenToId(n); ok {
			return int64(id)
		}
	}
	return -1
}

// Path is the file the tokenizer was loaded from.
func (t *Tokenizer) Path() string { return t.path }

// VocabSize is the number of token ids (model vocabulary plus added tokens).
func (t *Tokenizer) VocabSize() int { return t.vocab }

// Encode splits text into token ids; no BOS/EOS are added. Unknown words
// map to the unknown token.
func (t *Tokenizer) Encode(text string) (ids []int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			ids, err = nil, fmt.Errorf("tokenizer %s: encode %q: %v", t.path, text, r)
		}
	}()
	enc, err := t.tk.EncodeSingle(text, false)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: encode %q: %w", t.path, text, err)
	}
	ids = make([]int64, len(enc.Ids))
	for i, id := range enc.Ids {
		ids[i] = int64(id)
	}
	return ids, nil
}

// Decode returns the human-readable text of ids: special tokens and ids
// outside the vocabulary are skipped, words are joined with spaces and the
// caption separator is written without the space before it ("left; a").
func (t *Tokenizer) Decode(ids []int64) string {
	in := make([]int, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && id < int64(t.vocab) {
			in = append(in, int(id))
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.ReplaceAll(t.tk.Decode(in, true), " ;", ";")
}
