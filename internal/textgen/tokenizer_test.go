package textgen

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The ids follow models/train/tokenizer_words.py: [PAD] [BOS] [EOS] [UNK],
// then a red green blue yellow circle square triangle moves left right up
// down is still ;
func TestTokenizerKnownStrings(t *testing.T) {
	tk, err := LoadTokenizer(filepath.Join(tinyDir, TokenizerFile))
	if err != nil {
		t.Fatal(err)
	}
	if tk.VocabSize() != 20 {
		t.Errorf("VocabSize %d, want 20", tk.VocabSize())
	}
	if tk.PadID != 0 || tk.BOSID != 1 || tk.EOSID != 2 || tk.UNKID != 3 {
		t.Errorf("special ids pad %d bos %d eos %d unk %d, want 0 1 2 3", tk.PadID, tk.BOSID, tk.EOSID, tk.UNKID)
	}
	for _, tc := range []struct {
		text string
		ids  []int64
		back string // Decode(ids)
	}{
		{"a red circle moves left; a blue square is still", []int64{4, 5, 9, 12, 13, 19, 4, 7, 10, 17, 18}, "a red circle moves left; a blue square is still"},
		{"a red circle moves left ; a blue square is still", []int64{4, 5, 9, 12, 13, 19, 4, 7, 10, 17, 18}, "a red circle moves left; a blue square is still"},
		{"a yellow triangle moves up;a green circle moves down", []int64{4, 8, 11, 12, 15, 19, 4, 6, 9, 12, 16}, "a yellow triangle moves up; a green circle moves down"},
		{"  a   square\tmoves right\n", []int64{4, 10, 12, 14}, "a square moves right"},
		{"a purple circle", []int64{4, 3, 9}, "a circle"}, // unknown word → [UNK], dropped on decode
		{"[BOS] a red square [EOS]", []int64{1, 4, 5, 10, 2}, "a red square"},
		{"", []int64{}, ""},
	} {
		got, err := tk.Encode(tc.text)
		if err != nil {
			t.Fatalf("Encode(%q): %v", tc.text, err)
		}
		if !slices.Equal(got, tc.ids) {
			t.Errorf("Encode(%q) = %v, want %v", tc.text, got, tc.ids)
		}
		if back := tk.Decode(tc.ids); back != tc.back {
			t.Errorf("Decode(%v) = %q, want %q", tc.ids, back, tc.back)
		}
	}
	// Padding after EOS and ids outside the vocabulary are dropped.
	if got := tk.Decode([]int64{1, 4, 5, 9, 2, 0, 0, 99, -1}); got != "a red circle" {
		t.Errorf("Decode with specials and bad ids = %q", got)
	}
}

func TestTokenizerBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"not json":         "{",
		"vocab not a map":  `{"model": {"type": "WordLevel", "vocab": [1, 2], "unk_token": "[UNK]"}}`,
		"unknown model":    `{"model": {"type": "Sparkle", "vocab": {}}}`,
		"unknown pretoken": `{"pre_tokenizer": {"type": "Sparkle"}, "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}}`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadTokenizer(p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want one naming %s", name, err, p)
		}
	}
	if _, err := LoadTokenizer(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
}
