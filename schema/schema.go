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
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(AnnotationV1))
	if err != nil {
		return nil, fmt.Errorf("annotation schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	const url = "annotation.v1.json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// ValidateAnnotation checks one annotation's JSON against the schema.
func ValidateAnnotation(s *jsonschema.Schema, data []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return s.Validate(v)
}
