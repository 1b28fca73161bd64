// Package testenv finds what tests need around the repository: its root and
// the real shared assets beside it.
package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot is the folder holding go.mod, found upward from the test's package.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test")
		}
		dir = parent
	}
}

// SharedAssets returns ../shared/assets beside the repository. When it is
// absent (a user's clone) the test is skipped with a message — unless
// PATCHLINE_REQUIRE_SHARED is set, as CI sets it, when that is a failure: a
// test that silently skips proves nothing.
func SharedAssets(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(RepoRoot(t), "..", "shared", "assets")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("PATCHLINE_REQUIRE_SHARED") != "" {
			t.Fatalf("../shared/assets is required (PATCHLINE_REQUIRE_SHARED is set) but missing at %s: %v", dir, err)
		}
		t.Skipf("skipping: real test assets not found at %s (../shared/assets beside the repository root): %v", dir, err)
	}
	return dir
}
