// Package schema embeds the JSON Schemas of patchline's public messages.
package schema

import (
	"bytes"
	_ "embed"
	"fmt"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// AnnotationV1 is the JSON Schema of patchline.annotation/v1.
//
//go:embed annotation.v1.json
var AnnotationV1 []byte

// CompileAnnotation compiles the annotation schema for validation.
func CompileAnnotation() (*jsonschema.Schema, error) {
	return compile("annotation.v1.json", AnnotationV1)
}

// compile compiles one embedded schema document; name is its resource URL.
func compile(name string, data []byte) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(name, doc); err != nil {
		return nil, err
	}
	return c.Compile(name)
}

// GeneratedV1 is the JSON Schema of patchline.generated/v1 messages.
//
//go:embed generated.v1.json
var GeneratedV1 []byte

// CompileGenerated compiles the generated-frame schema; validate with
// ValidateAnnotation (it works for any compiled schema).
func CompileGenerated() (*jsonschema.Schema, error) {
	return compile("generated.v1.json", GeneratedV1)
}

// ValidateAnnotation checks one annotation's JSON against the schema.
func ValidateAnnotation(s *jsonschema.Schema, data []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return s.Validate(v)
}
