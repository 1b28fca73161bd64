// Package strictjson decodes request bodies of the HTTP and NATS APIs: one
// JSON value, no field the target does not have, and errors that say what
// and where, in JSON's terms rather than Go's.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Decode reads data, which must be one JSON value of v's fields and
// nothing after it, into v; the error says what is wrong and where.
func Decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describe(err, len(data))
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF { // even a stray "}" or "]", which dec.More misses
		return fmt.Errorf("more than one JSON value (the first ends at byte %d)", end)
	}
	return nil
}

// describe makes encoding/json's errors say where, without Go's type names
// where a JSON reader would not know them; n is the input's length.
func describe(err error, n int) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%w at byte %d", err, se.Offset)
	case errors.Is(err, io.EOF):
		return errors.New("empty: want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("the JSON ends early, at byte %d: %w", n, err)
	case errors.As(err, &te) && te.Field == "":
		return fmt.Errorf("a JSON %s, want an object", te.Value)
	case errors.As(err, &te):
		return fmt.Errorf("field %q: want %s, got %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	return err
}

// jsonKind names a Go kind as JSON does.
func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	}
	return goKind
}
