package sink

import (
	"io"
	"os"
	"syscall"

	"gopkg.in/natefinch/lumberjack.v2"
)

// jsonlFile is the JSON Lines output: lumberjack's rotating writer (by
// size, keeping jsonl_keep files), which also stays on its path when
// another tool moves, deletes or truncates the file (logrotate's create and
// copytruncate modes), and never leaves part of a line behind.
//
// lumberjack alone would go on writing into a moved or deleted file, and
// it opens the files it rotates to without O_APPEND, so after a truncation
// it writes at its old offset and the file starts with a run of NUL bytes.
// Here every write first checks the path: if the file there is not the one
// last written, or is shorter, the writer is closed, and lumberjack's next
// write opens the path again, in append mode. A file lumberjack created
// during a write is closed after it for the same reason.
type jsonlFile struct {
	path string
	w    io.WriteCloser // lumberjack.Logger; another writer in tests
	ino  uint64         // the file last written, and its size then
	size int64
}

func newJSONLFile(path string, maxMB, keep int) *jsonlFile {
	return &jsonlFile{path: path, w: &lumberjack.Logger{Filename: path, MaxSize: maxMB, MaxBackups: keep}, size: -1}
}

// touch creates the file at path if there is none, readable by all (0644,
// less the umask) as log files are, and checks that it can be written.
func touch(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// stat returns the inode and size of the file at f.path (ok false if none).
func (f *jsonlFile) stat() (ino uint64, size int64, ok bool) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return 0, 0, false
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil {
		return 0, fi.Size(), true
	}
	return st.Ino, fi.Size(), true
}

// Write writes p, whole lines, into the file at f.path. A failed write (a
// full disk) is cut off, so that the file ends with a whole line.
func (f *jsonlFile) Write(p []byte) error {
	ino, size, ok := f.stat()
	if f.size >= 0 && (!ok || ino != f.ino || size < f.size) {
		_ = f.w.Close() // moved, deleted or truncated: the next write reopens the path
		if !ok {
			// lumberjack would make it readable by its owner only (0600):
			// make it as the sink made the first one, for log shippers.
			_ = touch(f.path)
		}
		ino, size, ok = f.stat()
	}
	_, err := f.w.Write(p)
	after, afterSize, afterOK := f.stat()
	if err != nil && afterOK {
		keep := int64(0) // a file made by this write: none of it is whole
		if ok && after == ino {
			keep = size
		}
		if afterSize > keep {
			_ = os.Truncate(f.path, keep)
		}
		_ = f.w.Close() // lumberjack counts what it wrote: let it look again
		f.ino, f.size = after, keep
		return err
	}
	switch {
	case !afterOK:
		// Moved or deleted right after the write: the next one reopens.
		_ = f.w.Close()
		f.ino, f.size = 0, 0
		return err
	case !ok || after != ino:
		_ = f.w.Close() // opened by lumberjack without O_APPEND
	}
	f.ino, f.size = after, afterSize
	return err
}

// Close closes the file.
func (f *jsonlFile) Close() error { return f.w.Close() }
