package config

import "strings"

// Error is one configuration problem. Load joins them with errors.Join, so a
// caller sees every problem at once; errors.As finds the first.
type Error struct {
	// Pos says where the value came from: "file:line", the file name alone,
	// or the PATCHLINE_* variable that set it. Empty from Validate.
	Pos string
	// Path is the key path, e.g. "analyze.batch_size" or "cameras[1].url".
	Path string
	// Err is what is wrong.
	Err error
}

// Error formats the problem as "pos: path: message", leaving out empty parts.
func (e *Error) Error() string {
	parts := make([]string, 0, 3)
	for _, s := range []string{e.Pos, e.Path} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	parts = append(parts, e.Err.Error())
	return strings.Join(parts, ": ")
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// joinPath appends a mapping key to a key path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
