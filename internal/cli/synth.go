package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/dataset"
	"github.com/patchline/patchline/internal/synth"
)

func newSynthCmd() *cobra.Command {
	var (
		o   dataset.Options
		out string
		cfg string
	)
	o.Scene = synth.DefaultParams()
	cmd := &cobra.Command{
		Use:   "synth --seed S --frames N --out DIR",
		Short: "Write synthetic-world frames and their ground truth (for training and tests)",
		Long: `synth renders sequences of the synthetic world (seeds S, S+1, ...), passes
each frame through the decode stage's own resize, and writes what a model
would see with its exact ground truth: frames.npy, classes.npy (per-patch
class map), truth.jsonl (objects, boxes, motion, caption, anomaly) and
meta.json. The model input size, patch size and resize mode come from the
decode section of -c FILE (default: the built-in defaults).

Held-out test seeds are 1..999; training uses seeds from 100000 up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out DIR is required")
			}
			c := config.Default()
			if cfg != "" {
				var err error
				if c, err = config.Load(cfg); err != nil {
					return err
				}
			}
			o.Decode = c.Decode
			if o.Scene.Anomaly == "" && (o.Scene.AnomalyAt != 0 || o.Scene.AnomalyEvery != 0) {
				return fmt.Errorf("--anomaly-at and --anomaly-every need --anomaly teleport|reverse|spawn")
			}
			m, err := dataset.Write(out, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d frames (%d sequences from seed %d) at %dx%d, grid %dx%d, to %s\n",
				len(m.Seeds)*m.FramesPerSequence, len(m.Seeds), o.Seed, m.Width, m.Height, m.Grid[0], m.Grid[1], out)
			return nil
		},
	}
	f := cmd.Flags()
	f.Int64Var(&o.Seed, "seed", 1, "seed of the first sequence")
	f.IntVar(&o.Sequences, "sequences", 1, "number of sequences (seeds seed, seed+1, ...)")
	f.IntVar(&o.Frames, "frames", 100, "frames per sequence")
	f.StringVar(&out, "out", "", "output directory")
	f.StringVarP(&cfg, "config", "c", "", "pipeline config whose decode section sets the model input")
	f.IntVar(&o.Scene.Width, "width", o.Scene.Width, "source frame width")
	f.IntVar(&o.Scene.Height, "height", o.Scene.Height, "source frame height")
	f.IntVar(&o.Scene.Objects, "objects", o.Scene.Objects, "objects per scene")
	f.StringVar(&o.Scene.Background, "background", o.Scene.Background, "auto, plain, gradient, noise or texture")
	f.StringVar(&o.Scene.Anomaly, "anomaly", "", "inject an anomaly: teleport, reverse or spawn")
	f.IntVar(&o.Scene.AnomalyAt, "anomaly-at", 0, "frame of the first injected anomaly")
	f.IntVar(&o.Scene.AnomalyEvery, "anomaly-every", 0, "inject again every N frames (0: once)")
	f.BoolVar(&o.PNG, "png", false, "also write the source frames as PNG under DIR/png")
	return cmd
}
