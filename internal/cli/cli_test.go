package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestValidateShippedConfig(t *testing.T) {
	out, err := run(t, "validate", "-c", "../../pipeline.yaml")
	if err != nil || !strings.Contains(out, "ok (1 camera, model models/scene-vit)") {
		t.Fatalf("validate pipeline.yaml: %v\n%s", err, out)
	}
}

func TestValidateReportsBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ yaml, want string }{
		"invalid yaml": {"decode: [\n", "bad.yaml:"},
		"unknown key":  {"analyze:\n  batch_sise: 4\n", `bad.yaml:2: analyze.batch_sise: unknown key`},
		"bad scheme":   {"cameras:\n  - id: a\n    url: htp://x\n", `unknown scheme "htp"`},
	} {
		p := filepath.Join(dir, "bad.yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, "validate", "-c", p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want it to contain %q", name, err, c.want)
		}
	}
}

func TestReplicasNeedACluster(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pipeline.yaml")
	if err := os.WriteFile(p, []byte("nats:\n  replicas: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "run", "-c", p)
	if err == nil || !strings.Contains(err.Error(), "nats.replicas is 3, but the embedded server is a single node") {
		t.Fatalf("run with replicas 3 on the embedded server: %v", err)
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range []string{"run", "stage", "attach", "detach", "cameras", "watch", "validate", "version"} {
		out, err := run(t, c, "--help")
		if err != nil || !strings.Contains(out, "Usage:") {
			t.Errorf("%s --help: %v\n%s", c, err, out)
		}
	}
	if _, err := run(t, "stage", "transcode"); err == nil || !strings.Contains(err.Error(), "invalid argument") {
		t.Errorf("unknown stage: %v", err)
	}
	if _, err := run(t, "cameras", "--api", "http://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "is `patchline run` running?") {
		t.Errorf("cameras without a pipeline: %v", err)
	}
}
