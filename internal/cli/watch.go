package cli

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
)

func newWatchCmd() *cobra.Command {
	var natsURL string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "watch [camera]",
		Short: "Print live annotations (all cameras, or one)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			subject := bus.AnnotationsPrefix + "*"
			if len(args) == 1 {
				subject = bus.AnnotationSubject(args[0])
			}
			nc, err := nats.Connect(natsURL, nats.Name("patchline-watch"), nats.MaxReconnects(-1))
			if err != nil {
				return fmt.Errorf("connect %s: %w", natsURL, err)
			}
			defer nc.Close()
			out := cmd.OutOrStdout()
			sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
				if asJSON {
					fmt.Fprintln(out, string(m.Data))
					return
				}
				var a annotation.Annotation
				if err := json.Unmarshal(m.Data, &a); err != nil {
					fmt.Fprintf(out, "%s: malformed annotation: %v\n", m.Subject, err)
					return
				}
				fmt.Fprintln(out, summarize(a))
			})
			if err != nil {
				return err
			}
			defer func() { _ = sub.Unsubscribe() }()
			fmt.Fprintf(cmd.ErrOrStderr(), "watching %s on %s (Ctrl-C to stop)\n", subject, natsURL)
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&natsURL, "nats", "nats://127.0.0.1:4222", "NATS server URL")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each annotation's JSON")
	return cmd
}

// summarize renders one annotation as a line for people.
func summarize(a annotation.Annotation) string {
	var parts []string
	for _, l := range a.Labels {
		parts = append(parts, fmt.Sprintf("%s %.2f", l.Label, l.Score))
	}
	for _, d := range a.Detections {
		parts = append(parts, fmt.Sprintf("%s %.2f [%.0f,%.0f,%.0f,%.0f]", d.Label, d.Score, d.Box[0], d.Box[1], d.Box[2], d.Box[3]))
	}
	if len(parts) == 0 {
		parts = []string{"(nothing)"}
	}
	return fmt.Sprintf("%s #%d %s  %s  total %.1fms  trace %s",
		a.Camera, a.Seq, a.CapturedAt.Format("15:04:05.000"), strings.Join(parts, "; "), a.LatencyMs["total"], a.TraceID)
}

func newValidateCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a pipeline configuration file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d cameras, model %s)\n", cfgPath, len(cfg.Cameras), cfg.Analyze.Model)
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "pipeline.yaml", "pipeline configuration file")
	return cmd
}
