package generate

import (
	"errors"
	"fmt"
	"strings"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/textgen"
)

// Models are the generate stage's models; either may be nil (not configured).
type Models struct {
	Captions *textgen.Captioner
	Framegen *Framegen
}

// OpenModels opens generate.caption_model and generate.framegen_model and
// checks that each takes the frames decode makes, so a mismatch is an error
// at start that names both values.
func OpenModels(cfg config.Config) (*Models, error) {
	g, d := cfg.Generate, cfg.Decode
	opts := ModelOptions{Threads: g.Threads, ORTLibrary: cfg.Analyze.ORTLibrary}
	m := &Models{}
	if g.FramegenModel != "" {
		fg, err := OpenFramegen(g.FramegenModel, opts)
		if err != nil {
			return nil, fmt.Errorf("generate.framegen_model %s: %w", g.FramegenModel, err)
		}
		m.Framegen = fg
		w, h, p := fg.Grid()
		if err := checkDecode("generate.framegen_model "+g.FramegenModel, d, w, h, p); err != nil {
			_ = m.Close()
			return nil, err
		}
	}
	if g.CaptionModel != "" {
		c, err := textgen.Open(g.CaptionModel, textgen.Options{Threads: g.Threads, ORTLibrary: cfg.Analyze.ORTLibrary})
		if err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("generate.caption_model %s: %w", g.CaptionModel, err)
		}
		m.Captions = c
		if mt := g.Sampling.MaxTokens; mt > c.TokenLimit() {
			_ = m.Close()
			return nil, fmt.Errorf("generate.sampling.max_tokens %d: generate.caption_model %s makes at most %d tokens", mt, g.CaptionModel, c.TokenLimit())
		}
		w, h, p := c.Grid()
		if err := checkDecode("generate.caption_model "+g.CaptionModel, d, w, h, p); err != nil {
			_ = m.Close()
			return nil, err
		}
	}
	return m, nil
}

func checkDecode(model string, d config.Decode, w, h, p int) error {
	if d.Width != w || d.Height != h || d.PatchSize != p {
		return fmt.Errorf("%s takes %dx%d frames in %d-pixel patches, but decode makes %dx%d in %d-pixel patches (decode.width, decode.height, decode.patch_size; or set %s to \"\" to run without it)",
			model, w, h, p, d.Width, d.Height, d.PatchSize, strings.Fields(model)[0])
	}
	return nil
}

// Close releases the models.
func (m *Models) Close() error {
	var errs []error
	if m.Captions != nil {
		errs = append(errs, m.Captions.Close())
	}
	if m.Framegen != nil {
		errs = append(errs, m.Framegen.Close())
	}
	return errors.Join(errs...)
}
