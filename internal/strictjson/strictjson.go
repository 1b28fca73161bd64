// Package strictjson decodes request bodies of the HTTP and NATS APIs: one
// JSON value, no field the target does not have, and errors that say where.
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
		return errors.New(describe(err))
	}
	if _, err := dec.Token(); err != io.EOF { // even a stray "}" or "]", which dec.More misses
		return errors.New("more than one JSON value")
	}
	return nil
}

// describe makes encoding/json's errors say where.
func describe(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%v at byte %d", se, se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q: want %s, got %s", te.Field, te.Type, te.Value)
	}
	return err.Error()
}
