package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts the name of every environment override.
const EnvPrefix = "PATCHLINE_"

// envLeaf is one scalar field that an environment variable can set.
type envLeaf struct {
	name  string // PATCHLINE_ANALYZE_BATCH_SIZE
	path  string // analyze.batch_size
	index []int  // field index path from Config
	list  bool   // a list of strings: comma-separated, or a JSON list
}

// envLeaves lists the overridable fields of Config, derived from the yaml
// tags: every scalar field and list of strings outside a list. New fields
// get a variable for free.
func envLeaves() []envLeaf {
	return collectLeaves(reflect.TypeFor[Config](), nil, nil)
}

func collectLeaves(t reflect.Type, keys []string, index []int) []envLeaf {
	var out []envLeaf
	for i := range t.NumField() {
		f := t.Field(i)
		key := yamlKey(f)
		if key == "" {
			continue
		}
		k := append(slices.Clone(keys), key)
		idx := append(slices.Clone(index), i)
		switch {
		case f.Type == durationType:
			out = append(out, newLeaf(k, idx))
		case f.Type.Kind() == reflect.Struct:
			out = append(out, collectLeaves(f.Type, k, idx)...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
			leaf := newLeaf(k, idx)
			leaf.list = true
			out = append(out, leaf)
		case f.Type.Kind() == reflect.Slice, f.Type.Kind() == reflect.Map:
			// Lists of records (cameras, webhooks) are set in the file only.
		default:
			out = append(out, newLeaf(k, idx))
		}
	}
	return out
}

func newLeaf(keys []string, index []int) envLeaf {
	return envLeaf{
		name:  EnvPrefix + strings.ToUpper(strings.Join(keys, "_")),
		path:  strings.Join(keys, "."),
		index: index,
	}
}

// EnvVars maps each PATCHLINE_* variable that Load reads to the key path it
// overrides, e.g. PATCHLINE_ANALYZE_BATCH_SIZE → analyze.batch_size.
func EnvVars() map[string]string {
	out := map[string]string{}
	for _, l := range envLeaves() {
		out[l.name] = l.path
	}
	return out
}

// applyEnv overrides fields of c from the PATCHLINE_* variables that lookup
// finds. Values are read like unquoted YAML scalars ("8", "20ms", "true") and
// used as they are: no ${VAR} expansion. A set but empty variable sets a
// string field to "" and is an error for any other field.
// A list is "a,b" (spaces around items dropped) or, for items with commas,
// a JSON list: ["a,b", "c"]; [] empties it.
func applyEnv(c *Config, lookup func(string) (string, bool), origins map[string]string) []error {
	var errs []error
	root := reflect.ValueOf(c).Elem()
	for _, l := range envLeaves() {
		s, ok := lookup(l.name)
		if !ok {
			continue
		}
		if l.list {
			items, err := envList(s)
			if err != nil {
				errs = append(errs, &Error{Pos: l.name, Path: l.path, Err: err})
				continue
			}
			root.FieldByIndex(l.index).Set(reflect.ValueOf(items))
			// The file's items are gone: their problems are the variable's.
			maps.DeleteFunc(origins, func(path, _ string) bool { return strings.HasPrefix(path, l.path+"[") })
			origins[l.path] = l.name
			for i := range items {
				origins[fmt.Sprintf("%s[%d]", l.path, i)] = l.name
			}
			continue
		}
		n := &yaml.Node{Kind: yaml.ScalarNode, Value: s}
		if err := setScalar(root.FieldByIndex(l.index), n); err != nil {
			errs = append(errs, &Error{Pos: l.name, Path: l.path, Err: err})
			continue
		}
		origins[l.path] = l.name
	}
	return errs
}

// envList parses a list variable's value: a JSON list of strings when it
// starts with '[' (for items with commas), else comma-separated items,
// blank ones dropped. A set but blank value is an error, not an empty list:
// a template's PATCHLINE_DECODE_FILE_ROOTS= would otherwise lift the file's
// roots. [] is the empty list.
func envList(raw string) ([]string, error) {
	s := strings.TrimSpace(raw)
	if strings.HasPrefix(s, "[") {
		var items []string
		if err := json.Unmarshal([]byte(s), &items); err != nil || slices.Contains(items, "") {
			return nil, fmt.Errorf(`want a JSON list of non-empty strings such as ["a", "b,c"], or a,b; got %q`, s)
		}
		if items == nil {
			items = []string{}
		}
		return items, nil
	}
	items := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("set but empty (%q): unset it to keep the file's list, or set [] for no items", raw)
	}
	return items, nil
}

// StrayEnv returns a warning for each variable of environ ("NAME=value")
// that looks like a mistyped override: a PATCHLINE_ name that is no
// setting's but within two edits of one (PATCHLINE_ANALYZE_BATCHSIZE). Such
// a variable would otherwise do nothing, silently. Other PATCHLINE_ names
// are left alone: a file's ${VAR} may use any.
func StrayEnv(environ []string) []string {
	vars := EnvVars()
	names := slices.Sorted(maps.Keys(vars))
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		if _, ok := vars[name]; ok {
			continue
		}
		if best := nearest(name, names); best != "" {
			out = append(out, fmt.Sprintf("%s is not a setting and changes nothing (did you mean %s, for %s?)", name, best, vars[best]))
		}
	}
	slices.Sort(out)
	return out
}
