package config

import (
	"fmt"
	"strings"
)

// expand replaces ${VAR} and ${VAR:-default} in s with values from lookup.
// The default applies when VAR is unset or empty, as in the shell. "$${"
// stands for a literal "${"; any other '$' is kept as it is, so passwords and
// paths that contain '$' survive. An unset VAR without a default is an error.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' { // "$${" is an escaped "${"
			b.WriteString(s[:i-1] + "${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated %q (want ${VAR} or ${VAR:-default})", s[i:])
		}
		val, err := expandOne(s[i+2:i+end], lookup)
		if err != nil {
			return "", err
		}
		b.WriteString(val)
		s = s[i+end+1:]
	}
}

// expandOne resolves the inside of one ${...}.
func expandOne(expr string, lookup func(string) (string, bool)) (string, error) {
	name, def, hasDef := strings.Cut(expr, ":-")
	if !validEnvName(name) {
		return "", fmt.Errorf("${%s}: %q is not a variable name", expr, name)
	}
	val, ok := lookup(name)
	if ok && (val != "" || !hasDef) {
		return val, nil
	}
	if hasDef {
		return def, nil
	}
	return "", fmt.Errorf("${%s} is not set (set it, or write ${%s:-default})", name, name)
}

// validEnvName reports whether s is a shell variable name.
func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		letter := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !letter && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}
