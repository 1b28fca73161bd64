package strictjson

import (
	"strings"
	"testing"
)

type camera struct {
	ID   string   `json:"id"`
	FPS  float64  `json:"fps"`
	Loop bool     `json:"loop"`
	Tags []string `json:"tags"`
	Sub  *struct {
		N int `json:"n"`
	} `json:"sub"`
}

// TestDecodeErrors: each malformed body is refused with a message in
// JSON's terms that says what and where.
func TestDecodeErrors(t *testing.T) {
	for body, want := range map[string]string{
		``:                    "empty: want a JSON object",
		`{"id":"a"`:           "the JSON ends early, at byte 9",
		`{"id":"a"} trailing`: "more than one JSON value (the first ends at byte 10)",
		`{"id":"a"}}`:         "more than one JSON value",
		`{"id":"a","fsp":5}`:  `unknown field "fsp"`,
		`{"fps":"5"}`:         `field "fps": want a number, got string`,
		`{"loop":1}`:          `field "loop": want true or false, got number`,
		`{"tags":"x"}`:        `field "tags": want an array, got string`,
		`{"sub":{"n":1.5}}`:   `field "sub.n": want an integer, got number`,
		`[]`:                  "a JSON array, want an object",
		`"x"`:                 "a JSON string, want an object",
		`{"id":}`:             "invalid character '}' looking for beginning of value at byte 7",
	} {
		var c camera
		err := Decode([]byte(body), &c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%s) = %v, want it to say %q", body, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "strictjson.") {
			t.Errorf("Decode(%s) = %v: names a Go type", body, err)
		}
	}
	var c camera
	if err := Decode([]byte(` {"id":"a","fps":5,"tags":["x"]} `), &c); err != nil || c.ID != "a" || c.FPS != 5 {
		t.Errorf("a good body: %+v, %v", c, err)
	}
}

// FuzzDecode: any input either decodes, and then re-decodes from its
// encoding, or is an error with a message; it never panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"id":"a","fps":5}`, `{"id":"a"} x`, `[]`, `{"sub":{"n":1}}`, ``, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c camera
		if err := Decode(data, &c); err != nil && err.Error() == "" {
			t.Fatalf("an error without a message for %q", data)
		}
	})
}
