package textgen

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenTiny(t *testing.T) {
	c := openTiny(t)
	if c.NumFrames() != 2 {
		t.Errorf("NumFrames %d, want 2", c.NumFrames())
	}
	if w, h, p := c.Grid(); w != 96 || h != 96 || p != 8 {
		t.Errorf("Grid %d×%d patch %d, want 96×96 patch 8", w, h, p)
	}
	if c.MaxTokens() != 15 {
		t.Errorf("MaxTokens %d, want max_length 16 − 1", c.MaxTokens())
	}
}

// editJSON rewrites dir/name through edit.
func editJSON(t *testing.T, dir, name string, edit func(map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, name)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func addWord(m map[string]any) {
	m["model"].(map[string]any)["vocab"].(map[string]any)["purple"] = 20
}

func TestOpenBadBundles(t *testing.T) {
	for _, name := range BundleFiles {
		t.Run("missing "+name, func(t *testing.T) {
			_, err := Open(copyBundle(t, name), Options{Threads: 1})
			if err == nil || !strings.Contains(err.Error(), "missing "+name) {
				t.Fatalf("error %v, want one saying missing %s", err, name)
			}
		})
	}
	cases := []struct {
		name string
		edit func(dir string)
		want []string
	}{
		{"tokenizer larger than vocab_size", func(dir string) { editJSON(t, dir, TokenizerFile, addWord) },
			[]string{"tokenizer.json has 21 tokens", "config.json vocab_size is 20"}},
		{"logits narrower than tokenizer and vocab_size", func(dir string) {
			editJSON(t, dir, TokenizerFile, addWord)
			editJSON(t, dir, ConfigFile, func(m map[string]any) { m["vocab_size"] = 21 })
		}, []string{"decoder_model.onnx logits are 20 wide", "tokenizer.json has 21 tokens", "config.json vocab_size 21"}},
		{"eos id disagrees", func(dir string) {
			editJSON(t, dir, ConfigFile, func(m map[string]any) { m["eos_token_id"] = 5 })
		}, []string{"tokenizer.json maps [EOS] to 2", "eos_token_id is 5"}},
		{"num_frames", func(dir string) {
			editJSON(t, dir, ConfigFile, func(m map[string]any) { m["num_frames"] = 3 })
		}, []string{"encoder_model.onnx", "patch_tokens", "num_frames 3"}},
		{"num_heads", func(dir string) {
			editJSON(t, dir, ConfigFile, func(m map[string]any) {
				d := m["decoder"].(map[string]any)
				d["num_heads"], d["head_dim"] = 4, 8
			})
		}, []string{"present.0.key", "num_heads 4"}},
		{"num_layers", func(dir string) {
			editJSON(t, dir, ConfigFile, func(m map[string]any) { m["decoder"].(map[string]any)["num_layers"] = 3 })
		}, []string{"decoder_model.onnx has no output \"present.2.key\""}},
		{"patch size", func(dir string) {
			editJSON(t, dir, PreprocessorFile, func(m map[string]any) { m["patch_size"] = 16 })
		}, []string{"patch_tokens", "patch 16"}},
		{"not encoder-decoder", func(dir string) {
			editJSON(t, dir, ConfigFile, func(m map[string]any) { delete(m, "is_encoder_decoder") })
		}, []string{"config.json", "is_encoder_decoder"}},
		{"malformed tokenizer", func(dir string) {
			if err := os.WriteFile(filepath.Join(dir, TokenizerFile), []byte(`{"model": {"type": "WordLevel", "vocab": 7}}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"tokenizer.json"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyBundle(t)
			tc.edit(dir)
			_, err := Open(dir, Options{Threads: 1})
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
