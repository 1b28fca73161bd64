package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxDepth bounds recursion through aliases and merge keys, which YAML lets
// refer back to an enclosing node.
const maxDepth = 32

var durationType = reflect.TypeFor[time.Duration]()

// decoder walks a yaml.Node tree into a Config by reflection over the yaml
// struct tags, so every problem can name its key path and line.
type decoder struct {
	file    string
	lookup  func(string) (string, bool)
	errs    []error
	origins map[string]string // key path -> "file:line" of its value
}

func (d *decoder) fail(n *yaml.Node, path string, err error) {
	d.errs = append(d.errs, &Error{Pos: d.pos(n), Path: path, Err: err})
}

func (d *decoder) pos(n *yaml.Node) string {
	return fmt.Sprintf("%s:%d", d.file, n.Line)
}

// value decodes n into v, dispatching on v's type.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string, depth int) {
	if depth > maxDepth {
		d.fail(n, path, fmt.Errorf("nested deeper than %d levels (recursive alias?)", maxDepth))
		return
	}
	if n.Kind == yaml.AliasNode {
		d.value(n.Alias, v, path, depth+1)
		return
	}
	d.origins[path] = d.pos(n)
	switch {
	case v.Type() == durationType:
		d.scalar(n, v, path)
	case v.Kind() == reflect.Struct:
		d.mapping(n, v, path, depth)
	case v.Kind() == reflect.Slice:
		d.sequence(n, v, path, depth)
	case v.Kind() == reflect.Map:
		d.dict(n, v, path, depth)
	default:
		d.scalar(n, v, path)
	}
}

// dict decodes a YAML mapping with free keys (webhook headers) into map v,
// replacing its contents; values decode like fields (strings expand
// ${VAR}), keys are taken as written.
func (d *decoder) dict(n *yaml.Node, v reflect.Value, path string, depth int) {
	if isNull(n) {
		v.Set(reflect.Zero(v.Type()))
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, fmt.Errorf("want a mapping, got %s", describe(n)))
		return
	}
	out := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	d.entries(n, path, false, func(key, val *yaml.Node, p string) {
		elem := reflect.New(v.Type().Elem()).Elem()
		d.value(val, elem, p, depth+1)
		out.SetMapIndex(reflect.ValueOf(key.Value).Convert(v.Type().Key()), elem)
	})
	v.Set(out)
}

// entries calls each for every key of mapping n with its value and path,
// after failing keys that are not names and repeated keys. Merge keys
// ("<<") are skipped when merges is set (the caller applies them), else
// they are not names.
func (d *decoder) entries(n *yaml.Node, path string, merges bool, each func(key, val *yaml.Node, p string)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if merges && isMerge(key) {
			continue
		}
		if key.Kind != yaml.ScalarNode || isMerge(key) {
			d.fail(key, path, fmt.Errorf("want a key name, got %s", describe(key)))
			continue
		}
		p := joinPath(path, key.Value)
		if line, dup := seen[key.Value]; dup {
			d.fail(key, p, fmt.Errorf("duplicate key (first on line %d)", line))
			continue
		}
		seen[key.Value] = key.Line
		each(key, val, p)
	}
}

// mapping decodes a YAML mapping into struct v. A null value (a section whose
// keys are all commented out) keeps the defaults.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string, depth int) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, fmt.Errorf("want a mapping, got %s", describe(n)))
		return
	}
	// Merged keys (<<: *anchor) come first so explicit keys override them.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if isMerge(n.Content[i]) {
			d.merge(n.Content[i+1], v, path, depth+1)
		}
	}
	fields := yamlFields(v.Type())
	d.entries(n, path, true, func(key, val *yaml.Node, p string) {
		idx, ok := fields[key.Value]
		if !ok {
			d.fail(key, p, fmt.Errorf("unknown key%s", suggest(key.Value, fields)))
			return
		}
		d.value(val, v.Field(idx), p, depth+1)
	})
}

// merge applies the value of a "<<" key: a mapping or a list of mappings.
func (d *decoder) merge(n *yaml.Node, v reflect.Value, path string, depth int) {
	if n.Kind == yaml.AliasNode && depth <= maxDepth {
		d.merge(n.Alias, v, path, depth+1)
		return
	}
	if n.Kind == yaml.SequenceNode {
		for _, item := range n.Content {
			d.merge(item, v, path, depth+1)
		}
		return
	}
	d.value(n, v, path, depth)
}

// sequence decodes a YAML list into slice v, replacing its contents. Each
// element starts from its zero value, not from a default.
func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string, depth int) {
	if isNull(n) {
		v.Set(reflect.Zero(v.Type()))
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, fmt.Errorf("want a list, got %s", describe(n)))
		return
	}
	out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.value(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i), depth+1)
	}
	v.Set(out)
}

// scalar decodes a YAML scalar into a leaf field. Null sets the zero value;
// strings have ${VAR} expanded.
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, fmt.Errorf("want %s, got %s", want(v.Type()), describe(n)))
		return
	}
	if isNull(n) {
		v.Set(reflect.Zero(v.Type()))
		return
	}
	if v.Kind() == reflect.String {
		s, err := expand(n.Value, d.lookup)
		if err != nil {
			d.fail(n, path, err)
			return
		}
		v.SetString(s)
		return
	}
	if err := setScalar(v, n); err != nil {
		d.fail(n, path, err)
	}
}

// setScalar stores scalar n in leaf field v, following YAML 1.2 typing: an
// integer field wants an unquoted integer, a duration field a Go duration
// such as "20ms". Strings are stored verbatim.
func setScalar(v reflect.Value, n *yaml.Node) error {
	bad := fmt.Errorf("want %s, got %q", want(v.Type()), n.Value)
	tag := n.ShortTag()
	switch {
	case v.Type() == durationType:
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			return bad
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.String:
		v.SetString(n.Value)
	case v.Kind() == reflect.Bool:
		var b bool
		if tag != "!!bool" || n.Decode(&b) != nil {
			return bad
		}
		v.SetBool(b)
	case v.CanInt():
		var i int64
		if tag != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			return bad
		}
		v.SetInt(i)
	case v.CanFloat():
		var f float64
		if tag != "!!int" && tag != "!!float" || n.Decode(&f) != nil {
			return bad
		}
		v.SetFloat(f)
	default:
		return fmt.Errorf("want %s, got %q (no decoder for %s)", want(v.Type()), n.Value, v.Type())
	}
	return nil
}

// want names what a field of type t accepts, for error messages.
func want(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration like "20ms"`
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map:
		return "a mapping"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	default:
		return "an integer"
	}
}

// describe names what a node is, for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!merge"
}

// yamlFields maps the yaml key of each field of struct type t to its index.
func yamlFields(t reflect.Type) map[string]int {
	out := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		if key := yamlKey(t.Field(i)); key != "" {
			out[key] = i
		}
	}
	return out
}

// yamlKey is a field's yaml key, or "" for a field YAML does not see.
func yamlKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return strings.ToLower(f.Name)
	}
	return name
}

// suggest proposes the closest known key for a misspelt one, or lists the
// known keys when none is close.
func suggest(key string, fields map[string]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if best := nearest(key, keys); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return " (known keys: " + strings.Join(keys, ", ") + ")"
}

// nearest is the first of names (sorted) closest to name within two edits,
// or "": what a typo of name most likely meant.
func nearest(name string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if d := editDistance(name, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
