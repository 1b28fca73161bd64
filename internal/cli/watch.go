package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/patchline/patchline/internal/annotation"
	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
)

func newWatchCmd() *cobra.Command {
	var natsURL, since, stream string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "watch [camera]",
		Short: "Print live annotations (all cameras, or one), or replay stored ones first",
		Long: `Print annotations as they arrive, for every camera or one.

With --since, first replay what the annotation stream (sink.stream) kept
from that time on, then go on live: --since 10m, or --since 2026-11-29T14:00:00Z.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			subject := bus.AnnotationsPrefix + "*"
			if len(args) == 1 {
				if err := frame.ValidCameraID(args[0]); err != nil {
					return usage(cmd, fmt.Errorf("watch %q: %w", args[0], err))
				}
				subject = bus.AnnotationSubject(args[0])
			}
			var start time.Time
			if since != "" {
				var err error
				if start, err = parseSince(since, time.Now()); err != nil {
					return usage(cmd, err)
				}
			}
			stderr := cmd.ErrOrStderr()
			nc, err := natsConnect(natsURL, "patchline-watch", nats.MaxReconnects(-1),
				nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
					if err != nil {
						fmt.Fprintf(stderr, "NATS connection lost (%v); reconnecting…\n", err)
					}
				}),
				nats.ReconnectHandler(func(*nats.Conn) { fmt.Fprintln(stderr, "NATS reconnected; watching again") }))
			if err != nil {
				return err
			}
			defer nc.Close()
			out := cmd.OutOrStdout()
			show := func(subj string, data []byte) {
				if asJSON {
					fmt.Fprintln(out, string(data))
					return
				}
				var a annotation.Annotation
				if err := json.Unmarshal(data, &a); err != nil {
					fmt.Fprintf(out, "%s: malformed annotation: %v\n", subj, err)
					return
				}
				fmt.Fprintln(out, summarize(a))
			}
			ctx := cmd.Context()
			if since == "" {
				sub, err := nc.Subscribe(subject, func(m *nats.Msg) { show(m.Subject, m.Data) })
				if err != nil {
					return err
				}
				defer func() { _ = sub.Unsubscribe() }()
				fmt.Fprintf(cmd.ErrOrStderr(), "watching %s on %s (Ctrl-C to stop)\n", subject, bus.RedactURLs(natsURL))
			} else {
				cc, err := replay(ctx, nc, stream, subject, start, func(m jetstream.Msg) { show(m.Subject(), m.Data()) })
				if err != nil {
					return err
				}
				defer cc.Stop()
				fmt.Fprintf(cmd.ErrOrStderr(), "replaying %s from stream %s since %s, then watching (Ctrl-C to stop)\n",
					subject, stream, start.Format(time.RFC3339))
			}
			<-ctx.Done()
			return nil
		},
	}
	natsFlag(cmd, &natsURL)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each annotation's JSON")
	cmd.Flags().StringVar(&since, "since", "", "replay stored annotations from this long ago (10m) or this time (RFC 3339) first")
	cmd.Flags().StringVar(&stream, "stream", config.DefaultStream, "the annotation stream to replay from (sink.stream.name)")
	return cmd
}

// parseSince reads --since: a duration before now, or an RFC 3339 time.
// sinceSkew is how far ahead of this machine's clock --since may be: the
// servers' clocks may be that far ahead of it.
const sinceSkew = time.Minute

func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		// Later than now (give or take the servers' clocks) nothing is
		// stored yet: the replay would be no replay, only what comes.
		if t.After(now.Add(sinceSkew)) {
			return time.Time{}, fmt.Errorf("--since %s is in the future (this machine's clock says %s)", s, now.UTC().Format(time.RFC3339))
		}
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration such as 10m or a time such as 2026-11-29T14:00:00Z", s)
}

// replay consumes stream's messages on subject from start on, then new
// ones as they come, in order, with an ordered (ephemeral) consumer.
func replay(ctx context.Context, nc *nats.Conn, stream, subject string, start time.Time, f func(jetstream.Msg)) (jetstream.ConsumeContext, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("stream %s not found on %s: does a sink run with sink.stream.name %s?", stream, nc.ConnectedUrlRedacted(), stream)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	return cons.Consume(func(m jetstream.Msg) { f(m) })
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
	if p := a.Patches; p != nil {
		parts = append(parts, fmt.Sprintf("%d×%d patch classes", p.Grid[0], p.Grid[1]))
	}
	if c := a.Caption; c != nil {
		parts = append(parts, fmt.Sprintf("caption (%s): %q", c.Trigger, c.Text))
	}
	if an := a.Anomaly; an != nil {
		parts = append(parts, fmt.Sprintf("anomaly (%s) %.3f > %.3f, frame %s/%s", an.Trigger, an.Score, an.Threshold, an.Bucket, an.Object))
	}
	if len(parts) == 0 {
		parts = []string{"(nothing)"}
	}
	return fmt.Sprintf("%s #%d %s  %s  total %.1fms  trace %s",
		a.Camera, a.Seq, a.CapturedAt.Format("15:04:05.000"), strings.Join(parts, "; "), a.LatencyMs["total"], a.TraceID)
}

func newValidateCmd() *cobra.Command {
	var cfgPath string
	var noModels bool
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a pipeline configuration file, and that its models open and take the frames decode makes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			for _, w := range config.StrayEnv(os.Environ()) {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			if err != nil {
				return err
			}
			if cfg.NATS.URL == "" && cfg.NATS.Replicas > 1 {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: nats.replicas is %d with no nats.url: `patchline run` refuses to start without --nats, the embedded server being a single node\n", cfg.NATS.Replicas)
			}
			models := "models not opened"
			if !noModels {
				notes, err := app.CheckModels(cfg)
				for _, n := range notes {
					fmt.Fprintln(cmd.ErrOrStderr(), "warning:", n)
				}
				if err != nil {
					return err
				}
				models = "models open and match decode"
			}
			cams := fmt.Sprintf("%d cameras", len(cfg.Cameras))
			if len(cfg.Cameras) == 1 {
				cams = "1 camera"
			}
			named := "model " + cfg.Analyze.Model
			for _, m := range []struct{ what, dir string }{{"caption", cfg.Generate.CaptionModel}, {"framegen", cfg.Generate.FramegenModel}} {
				if m.dir != "" {
					named += ", " + m.what + " " + m.dir
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%s, %s; %s)\n", cfgPath, cams, named, models)
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "pipeline.yaml", "pipeline configuration file")
	cmd.Flags().BoolVar(&noModels, "no-models", false, "check the file only, without opening the model bundles (a machine without them)")
	return cmd
}
