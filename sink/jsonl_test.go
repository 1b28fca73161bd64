package sink

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/testenv"
)

// readLines returns the file's lines, failing on a NUL byte or a last
// line without its newline.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(b, 0) >= 0 {
		t.Fatalf("%s has NUL bytes: %q", path, b)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Fatalf("%s ends in part of a line: %q", path, b)
	}
	return strings.Fields(string(b))
}

// TestJSONLFileFollowsLogrotate: the output stays on its path when the
// file is moved (logrotate's create mode), deleted, or truncated in place
// (copytruncate), also right after a size rotation, whose new file
// lumberjack opens without O_APPEND.
func TestJSONLFileFollowsLogrotate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.jsonl")
	f := newJSONLFile(path, 1, 3)
	defer f.Close()
	n := 0
	write := func() string {
		n++
		line := fmt.Sprintf(`{"n":%d}`, n)
		if err := f.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		return line
	}
	write()
	write()
	if err := os.Rename(path, path+".1"); err != nil { // logrotate, create mode
		t.Fatal(err)
	}
	l3 := write()
	if got := readLines(t, path); len(got) != 1 || got[0] != l3 {
		t.Errorf("after a move, %s holds %q, want only %q", path, got, l3)
	}
	if got := readLines(t, path+".1"); len(got) != 2 {
		t.Errorf("the moved file holds %q, want the 2 lines before the move", got)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l4 := write()
	if got := readLines(t, path); len(got) != 1 || got[0] != l4 {
		t.Errorf("after a delete, %s holds %q, want %q", path, got, l4)
	}
	// Made again readable by others, as the sink makes the first one (for
	// a log shipper running as another user), not lumberjack's 0600.
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&0o044 == 0 {
		t.Errorf("the file made again after a delete: %v, mode %v; want it readable by group and others", err, fi.Mode())
	}
	// A size rotation (past 1 MB), then copytruncate.
	big := strings.Repeat("x", 600<<10)
	for range 3 {
		if err := f.Write([]byte(`{"pad":"` + big + `"}` + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(path, 0); err != nil { // logrotate, copytruncate
		t.Fatal(err)
	}
	l5 := write()
	if got := readLines(t, path); len(got) != 1 || got[0] != l5 {
		t.Errorf("after a truncation, %s holds %d lines, want only %q", path, len(got), l5)
	}
}

// openHere reports whether this process has the file at path open, from
// /proc/self/fd (the test is skipped where there is none).
func openHere(t *testing.T, path string) bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == path {
			return true
		}
	}
	return false
}

// inode is the inode number of the file at path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no inode numbers here")
	}
	return st.Ino
}

// TestJSONLFileTruncatedUnderTheWriter: copytruncate while the writer has
// the file open (in append mode, as lumberjack opens a file it finds)
// keeps the inode, so only the size check sees it. The writer starts over
// on the same file: the next write lands at offset 0, and the lines cut
// away no longer count towards jsonl_max_mb (lumberjack, left open, would
// count them and rotate the emptied file away at once).
func TestJSONLFileTruncatedUnderTheWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	f := newJSONLFile(path, 1, 3)
	defer f.Close()
	for _, line := range []string{`{"pad":"` + strings.Repeat("x", 700<<10) + `"}`, `{"n":1}`} {
		if err := f.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	if !openHere(t, path) {
		t.Fatal("the writer does not have the file open after a write to a file it found: nothing to test")
	}
	ino := inode(t, path)
	if err := os.Truncate(path, 0); err != nil { // logrotate, copytruncate
		t.Fatal(err)
	}
	if inode(t, path) != ino {
		t.Fatal("truncation changed the inode")
	}
	// 700 KiB cut away and 400 KiB now: over 1 MB only if the cut lines count.
	lines := []string{`{"n":2,"pad":"` + strings.Repeat("y", 400<<10) + `"}`, `{"n":3}`}
	want := strings.Join(lines, "\n") + "\n"
	if err := f.Write([]byte(want)); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != want {
		t.Errorf("after a truncation %s holds %d bytes (%v), want only the %d written since", path, len(b), err, len(want))
	}
	if inode(t, path) != ino {
		t.Error("the truncated file was replaced: the writer rotated it away")
	}
	if files, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*")); len(files) != 1 {
		t.Errorf("files %v, want only %s (no rotation below jsonl_max_mb)", files, path)
	}
}

// failingWriter writes half of what it is given, then fails, as a write
// to a full disk does.
type failingWriter struct {
	io.WriteCloser
	fail bool
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if !w.fail {
		return w.WriteCloser.Write(p)
	}
	n, _ := w.WriteCloser.Write(p[:len(p)/2])
	return n, errors.New("no space left on device")
}

// TestJSONLFileCutsAFailedWrite: a write that fails part way (a full disk)
// leaves no part of a line in the file, and the next write carries on.
func TestJSONLFileCutsAFailedWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	f := newJSONLFile(path, 100, 1)
	fw := &failingWriter{WriteCloser: f.w}
	f.w = fw
	defer f.Close()
	if err := f.Write([]byte("{\"n\":1}\n")); err != nil {
		t.Fatal(err)
	}
	fw.fail = true
	if err := f.Write([]byte("{\"n\":2,\"long\":\"abcdefghijklmnopqrstuvwxyz\"}\n{\"n\":3}\n")); err == nil {
		t.Fatal("the failing write did not fail")
	}
	fw.fail = false
	if err := f.Write([]byte("{\"n\":4}\n")); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, path); strings.Join(got, " ") != `{"n":1} {"n":4}` {
		t.Errorf("file holds %q, want the lines before and after the failed write", got)
	}
}

// movingWriter moves the file away right after each write that move is
// set for, as logrotate might between a write and the check after it.
type movingWriter struct {
	io.WriteCloser
	path string
	move bool
}

func (w *movingWriter) Write(p []byte) (int, error) {
	n, err := w.WriteCloser.Write(p)
	if w.move {
		w.move = false
		_ = os.Rename(w.path, w.path+".1")
	}
	return n, err
}

// TestJSONLFileMovedRightAfterAWrite: a file moved between a write and the
// check after it is still left for the path: the next write begins the
// file again there (it went on into the moved file).
func TestJSONLFileMovedRightAfterAWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	f := newJSONLFile(path, 100, 3)
	mw := &movingWriter{WriteCloser: f.w, path: path}
	f.w = mw
	defer f.Close()
	if err := f.Write([]byte("{\"n\":1}\n")); err != nil {
		t.Fatal(err)
	}
	mw.move = true
	if err := f.Write([]byte("{\"n\":2}\n")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{3, 4} {
		if err := f.Write([]byte(fmt.Sprintf("{\"n\":%d}\n", n))); err != nil {
			t.Fatal(err)
		}
	}
	if got := readLines(t, path); strings.Join(got, " ") != `{"n":3} {"n":4}` {
		t.Errorf("%s holds %q, want the lines after the move", path, got)
	}
	if got := readLines(t, path+".1"); strings.Join(got, " ") != `{"n":1} {"n":2}` {
		t.Errorf("the moved file holds %q, want the lines before the move", got)
	}
}

// TestJSONLDropsCountedAndRecoveryLogged: lines a failed write drops are
// counted in patchline_jsonl_lines_dropped_total (what an alert watches),
// the failures are logged thinned, and the first write that succeeds again
// says so and starts the thinning over, so that the next outage is logged
// at once.
func TestJSONLDropsCountedAndRecoveryLogged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	var logs testenv.Buffer
	s := &Stage{cfg: config.Sink{JSONL: path}, jsonl: newJSONLFile(path, 100, 1), log: slog.New(slog.NewTextHandler(&logs, nil))}
	fw := &failingWriter{WriteCloser: s.jsonl.w}
	s.jsonl.w = fw
	defer s.jsonl.Close()
	before := testutil.ToFloat64(jsonlDropped)
	write := func(lines ...string) {
		for _, l := range lines {
			s.writeLine([]byte(l))
		}
		s.flush()
	}
	fw.fail = true
	write(`{"n":1}`, `{"n":2}`)
	write(`{"n":3}`)
	fw.fail = false
	write(`{"n":4}`)
	fw.fail = true
	write(`{"n":5}`)
	if d := testutil.ToFloat64(jsonlDropped) - before; d != 4 {
		t.Errorf("patchline_jsonl_lines_dropped_total rose by %v, want 4", d)
	}
	out := logs.String()
	if n := strings.Count(out, "jsonl output: write failed"); n != 3 || !strings.Contains(out, "jsonl output: writing again") {
		t.Errorf("want 3 failure lines (two, then the new outage's first) and a recovery line:\n%s", out)
	}
}
