package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads the configuration: Default(), then the YAML file at path (if
// path is not empty), then PATCHLINE_* environment overrides, then Validate.
// String values in the file may use ${VAR} and ${VAR:-default}.
//
// Every problem is reported, joined with errors.Join; each is an *Error such
// as "pipeline.yaml:12: analyze.batch_sise: unknown key".
func Load(path string) (Config, error) {
	if path == "" {
		return load("", nil, os.LookupEnv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return load(path, data, os.LookupEnv)
}

// LoadBytes is Load for a file already in memory; name is used in messages.
// It reads the process environment like Load.
func LoadBytes(name string, data []byte) (Config, error) {
	return load(name, data, os.LookupEnv)
}

// load is Load with the environment supplied by lookup, for tests.
func load(name string, data []byte, lookup func(string) (string, bool)) (Config, error) {
	c := Default()
	d := &decoder{file: name, lookup: lookup, origins: map[string]string{}}
	if err := d.decodeFile(data, &c); err != nil {
		return Config{}, err // the file does not parse
	}
	// Every problem at once: a value of the wrong type or an unknown key
	// does not hide a bad value elsewhere.
	errs := append(d.errs, applyEnv(&c, lookup, d.origins)...)
	for _, err := range c.problems() {
		if underAny(err, errs) {
			continue // a consequence of a value that did not decode
		}
		locate(err, name, d.origins)
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// underAny reports whether problem's key path is one of errs' paths or
// lies under one ("cameras[1].id" under "cameras[1]").
func underAny(problem error, errs []error) bool {
	var p *Error
	if !errors.As(problem, &p) || p.Path == "" {
		return false
	}
	for _, err := range errs {
		var e *Error
		if errors.As(err, &e) && e.Path != "" && (p.Path == e.Path || strings.HasPrefix(p.Path, e.Path+".") || strings.HasPrefix(p.Path, e.Path+"[")) {
			return true
		}
	}
	return false
}

// decodeFile decodes one YAML document from data into c.
func (d *decoder) decodeFile(data []byte, c *Config) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // only comments
			return nil
		}
		return d.syntaxError(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return d.syntaxError(data, err)
		}
		return &Error{Pos: d.pos(&extra), Err: errors.New("want one YAML document, found another (remove the ---)")}
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode && !isNull(root) {
		return &Error{Pos: d.pos(root), Err: fmt.Errorf("want a mapping of sections, got %s", describe(root))}
	}
	d.value(root, reflect.ValueOf(c).Elem(), "", 0) // value problems go to d.errs
	return nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (?s:(.*))$`)

// syntaxError turns yaml's "yaml: line N: msg" into "file:line: msg". For
// parser errors yaml gives the line where the enclosing construct began, so
// the line reported is the first at which a prefix of the file fails with the
// same message, falling back to yaml's own line.
func (d *decoder) syntaxError(data []byte, err error) error {
	line, msg := splitYAMLError(err)
	if l := firstFailingLine(data, msg); l > 0 {
		line = l
	}
	if line == 0 {
		return &Error{Pos: d.file, Err: errors.New(msg)}
	}
	if lines := bytes.Split(data, []byte("\n")); line <= len(lines) && bytes.HasPrefix(lines[line-1], []byte("\t")) {
		msg += " (indent with spaces, not tabs)"
	}
	return &Error{Pos: d.pos(&yaml.Node{Line: line}), Err: errors.New(msg)}
}

// splitYAMLError splits a yaml error into its line (0 if none) and message.
func splitYAMLError(err error) (int, string) {
	m := yamlLineRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, strings.TrimPrefix(err.Error(), "yaml: ")
	}
	line, _ := strconv.Atoi(m[1])
	return line, m[2]
}

// firstFailingLine returns the smallest n such that the first n lines of data
// fail to parse with message msg, or 0.
func firstFailingLine(data []byte, msg string) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	for n := 1; n <= len(lines); n++ {
		err := parseAll(bytes.Join(lines[:n], nil))
		if err == nil {
			continue
		}
		if _, m := splitYAMLError(err); m == msg {
			return n
		}
	}
	return 0
}

// parseAll parses every document in data, for syntax only.
func parseAll(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// locate sets the position of a validation problem to where its value came
// from: the file line, the PATCHLINE_* variable, or just the file name.
func locate(err error, name string, origins map[string]string) {
	var e *Error
	if !errors.As(err, &e) || e.Pos != "" {
		return
	}
	if pos, ok := origins[e.Path]; ok {
		e.Pos = pos
		return
	}
	e.Pos = name
}
