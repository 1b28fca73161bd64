package frame

import "fmt"

// Tokenize writes the packed RGB image rgb (h rows of w·3 bytes) into dst as
// patch-major tokens of p×p pixels. w and h must be multiples of p and dst
// must hold w·h·3 bytes.
func Tokenize(dst, rgb []byte, w, h, p int) error {
	if err := checkTokens(dst, rgb, w, h, p); err != nil {
		return err
	}
	gw, row := w/p, p*3
	n := 0
	for gy := 0; gy < h/p; gy++ {
		for gx := 0; gx < gw; gx++ {
			for y := 0; y < p; y++ {
				src := ((gy*p+y)*w + gx*p) * 3
				n += copy(dst[n:n+row], rgb[src:src+row])
			}
		}
	}
	return nil
}

// Untokenize is Tokenize's exact inverse: patch-major tokens back to packed RGB.
func Untokenize(rgb, tokens []byte, w, h, p int) error {
	if err := checkTokens(tokens, rgb, w, h, p); err != nil {
		return err
	}
	gw, row := w/p, p*3
	n := 0
	for gy := 0; gy < h/p; gy++ {
		for gx := 0; gx < gw; gx++ {
			for y := 0; y < p; y++ {
				dst := ((gy*p+y)*w + gx*p) * 3
				n += copy(rgb[dst:dst+row], tokens[n:n+row])
			}
		}
	}
	return nil
}

func checkTokens(tokens, rgb []byte, w, h, p int) error {
	if p <= 0 || w <= 0 || h <= 0 || w%p != 0 || h%p != 0 {
		return fmt.Errorf("tokenize: %dx%d is not a multiple of patch size %d", w, h, p)
	}
	if len(rgb) != w*h*3 || len(tokens) != w*h*3 {
		return fmt.Errorf("tokenize: buffers are %d and %d bytes, want %d for %dx%d RGB", len(rgb), len(tokens), w*h*3, w, h)
	}
	return nil
}
