package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/patchline/patchline/generate"
	"github.com/patchline/patchline/internal/frame"
)

func newDescribeCmd() *cobra.Command {
	var (
		natsURL, timeout, out string
		frameKind, asJSON     bool
		sm                    generate.SamplingRequest
		temperature, topP     float64
		topK, maxTokens       int
		seed                  int64
	)
	cmd := &cobra.Command{
		Use:   "describe <camera>",
		Short: "Ask the generate stage for a caption of a camera's latest frames (or, with --frame, a generated frame)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out != "" && !frameKind {
				return usage(cmd, fmt.Errorf("--out %s writes a generated frame: add --frame (a caption has no image)", out))
			}
			if err := frame.ValidCameraID(args[0]); err != nil {
				return usage(cmd, err)
			}
			req := generate.Request{Camera: args[0], Kind: generate.KindCaption, Timeout: timeout}
			if frameKind {
				req.Kind = generate.KindFrame
			}
			f := cmd.Flags()
			if f.Changed("temperature") {
				sm.Temperature = &temperature
			}
			if f.Changed("top-k") {
				sm.TopK = &topK
			}
			if f.Changed("top-p") {
				sm.TopP = &topP
			}
			if f.Changed("seed") {
				sm.Seed = &seed
			}
			if f.Changed("max-tokens") {
				sm.MaxTokens = &maxTokens
			}
			if sm != (generate.SamplingRequest{}) {
				req.Sampling = &sm
			}
			d := generate.MaxTimeout // the stage answers within its own request_timeout
			if timeout != "" {
				var err error
				if d, err = time.ParseDuration(timeout); err != nil || d <= 0 || d > generate.MaxTimeout {
					return usage(cmd, fmt.Errorf("--timeout %q: want a positive duration up to %s, such as 10s", timeout, generate.MaxTimeout))
				}
			}
			nc, err := natsConnect(natsURL, "patchline-describe")
			if err != nil {
				return err
			}
			defer nc.Close()
			rep := generate.Describe(cmd.Context(), nc, req, d)
			if asJSON {
				b, _ := json.Marshal(rep)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
			}
			if rep.Error != "" {
				err := fmt.Errorf("describe %s: %s (reason %s)", args[0], rep.Error, rep.Reason)
				if rep.Reason == generate.ReasonBadRequest { // what the flags asked for
					return usage(cmd, err)
				}
				return err
			}
			if out != "" && rep.Generated != nil {
				b, err := generate.FetchObject(cmd.Context(), nc, rep.Generated.Object)
				if err != nil {
					return err
				}
				if err := os.WriteFile(out, b, 0o644); err != nil {
					return err
				}
			}
			if !asJSON {
				printReply(cmd, rep, out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	natsFlag(cmd, &natsURL)
	f.StringVar(&timeout, "timeout", "", "how long the request may take (its deadline; default generate.request_timeout)")
	f.BoolVar(&frameKind, "frame", false, "ask for a generated frame with its anomaly heatmap instead of a caption")
	f.StringVar(&out, "out", "", "with --frame: write the generated PNG (read back from the Object Store) to this file")
	f.BoolVar(&asJSON, "json", false, "print the reply JSON")
	f.Float64Var(&temperature, "temperature", 0, "sampling temperature (0 = greedy; default generate.sampling)")
	f.IntVar(&topK, "top-k", 0, "sample from the k most likely tokens (0 = off)")
	f.Float64Var(&topP, "top-p", 0, "nucleus sampling threshold (0 = off)")
	f.Int64Var(&seed, "seed", 0, "sampling seed")
	f.IntVar(&maxTokens, "max-tokens", 0, "most tokens to generate (0 = the model's max_length − 1)")
	f.BoolVar(&sm.NoCache, "no-cache", false, "decode without the KV cache (slower; for comparison)")
	return cmd
}

func printReply(cmd *cobra.Command, rep *generate.Reply, out string) {
	w := cmd.OutOrStdout()
	if a := rep.Caption; a != nil && a.Caption != nil {
		c := a.Caption
		fmt.Fprintf(w, "%s #%d: %s\n  %d tokens, first token %.1fms, %.0f tokens/s, queued %.1fms, trace %s\n",
			a.Camera, a.Seq, c.Text, len(c.Tokens), c.TimeToFirstTokenMs, c.TokensPerSecond, rep.QueueMs, a.TraceID)
	}
	if g := rep.Generated; g != nil {
		verdict := "normal"
		if g.Anomaly {
			verdict = "ANOMALY"
		}
		fmt.Fprintf(w, "%s #%d: generated frame %s/%s (%d bytes, sha256 %s)\n  anomaly score %.4f, threshold %.4f: %s; trace %s\n",
			g.Camera, g.Seq, g.Object.Bucket, g.Object.Name, g.Object.Size, g.Object.SHA256, g.Score, g.Threshold, verdict, g.TraceID)
		if out != "" {
			fmt.Fprintf(w, "  wrote %s\n", out)
		}
	}
}
