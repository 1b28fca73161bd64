package cli

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/patchline/patchline/internal/app"
	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
)

func newRunCmd(g *globals) *cobra.Command {
	var cfgPath, natsURL, httpAddr string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run every stage in one process (embedded NATS unless --nats is given)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, cfg, err := g.setup(cfgPath)
			if err != nil {
				return err
			}
			return app.Run(cmd.Context(), app.Options{
				Config: cfg, Stages: app.AllStages, NATSURL: natsURL, HTTPAddr: httpAddr, Logger: log, Version: Version,
				Ready: func(i app.Info) { printWhere(cmd.OutOrStdout(), os.Args[0], i) },
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "pipeline.yaml", "pipeline configuration file")
	cmd.Flags().StringVar(&natsURL, "nats", "", "use this NATS server instead of the embedded one (nats://host:4222)")
	cmd.Flags().StringVar(&httpAddr, "http", "", `HTTP address for the API, /metrics and health (default http.addr; "off" to disable)`)
	return cmd
}

func newStageCmd(g *globals) *cobra.Command {
	var cfgPath, natsURL, httpAddr string
	cmd := &cobra.Command{
		Use:   "stage <ingest|decode|analyze|sink|generate>",
		Short: "Run one stage against a NATS server; run more processes of a stage to scale it",
		Args: cobra.MatchAll(cobra.ExactArgs(1), func(_ *cobra.Command, args []string) error {
			if !slices.Contains(app.AllStages, args[0]) {
				return fmt.Errorf("unknown stage %q: want one of %s", args[0], strings.Join(app.AllStages, ", "))
			}
			return nil
		}),
		ValidArgs: app.AllStages,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, cfg, err := g.setup(cfgPath)
			if err != nil {
				return err
			}
			if natsURL == "" && cfg.NATS.URL == "" {
				return fmt.Errorf("stage %s needs a NATS server: pass --nats nats://host:4222 or set nats.url", args[0])
			}
			if httpAddr == "" && args[0] != app.Ingest {
				httpAddr = "off"
			}
			return app.Run(cmd.Context(), app.Options{
				Config: cfg, Stages: args, NATSURL: natsURL, HTTPAddr: httpAddr, Logger: log, Version: Version,
				Ready: func(i app.Info) {
					attrs := []any{"stage", args[0], "nats", bus.RedactURLs(i.NATSURL), "http", i.HTTPAddr}
					if i.NATSConnected {
						log.Info("stage ready", attrs...)
					} else {
						log.Warn("stage started, waiting for NATS: it subscribes once NATS is reachable", attrs...)
					}
				},
			})
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "pipeline.yaml", "pipeline configuration file")
	cmd.Flags().StringVar(&natsURL, "nats", "", "NATS server URL (default nats.url)")
	cmd.Flags().StringVar(&httpAddr, "http", "", `HTTP address for /metrics and health (ingest also serves the API; default http.addr for ingest, "off" for others)`)
	return cmd
}

// setup makes the logger and loads the configuration every stage-running
// command needs.
func (g *globals) setup(cfgPath string) (*slog.Logger, config.Config, error) {
	log, err := g.logger(config.Default().Log) // a bad flag is an error before the config
	if err != nil {
		return nil, config.Config{}, err
	}
	cfg, err := config.Load(cfgPath)
	if err == nil {
		if log, err = g.logger(cfg.Log); err != nil {
			return nil, cfg, err
		}
	}
	for _, w := range config.StrayEnv(os.Environ()) {
		log.Warn(w)
	}
	return log, cfg, err
}

// printWhere says where to look; the commands it suggests start with self,
// the binary as it was invoked (bin/patchline under make run).
func printWhere(w io.Writer, self string, i app.Info) {
	natsURL := bus.RedactURLs(i.NATSURL) // the credentials stay in the config
	shown := natsURL
	if i.Embedded {
		if u, err := url.Parse(natsURL); err == nil {
			u.Host = dialable(u.Host)
			natsURL = u.String()
		}
		shown = natsURL + " (embedded)"
	}
	if i.HTTPAddr != "" {
		i.HTTPAddr = dialable(i.HTTPAddr)
	}
	fmt.Fprintf(w, "\npatchline is running (stages: %s)\n", strings.Join(i.Stages, ", "))
	fmt.Fprintf(w, "  NATS          %s\n", shown)
	if i.HTTPAddr != "" {
		fmt.Fprintf(w, "  web console   http://%s/\n", i.HTTPAddr)
		fmt.Fprintf(w, "  HTTP API      http://%s/v1/cameras\n", i.HTTPAddr)
		fmt.Fprintf(w, "  metrics       http://%s/metrics\n", i.HTTPAddr)
	} else {
		fmt.Fprintf(w, "  HTTP          off (no console, camera API or metrics)\n")
	}
	fmt.Fprintf(w, "  frames        %s<camera>   (patch tokens, binary)\n", bus.FramesPrefix)
	fmt.Fprintf(w, "  annotations   %s<camera>   (JSON)\n\n", bus.AnnotationsPrefix)
	fmt.Fprintf(w, "  watch it:     %s watch --nats %s\n", self, natsURL)
	if i.HTTPAddr != "" {
		fmt.Fprintf(w, "  cameras:      %s cameras --api http://%s\n", self, i.HTTPAddr)
		fmt.Fprintf(w, "  attach RTSP:  %s attach cam1 rtsp://user:pass@host/path --api http://%s\n", self, i.HTTPAddr)
	}
	fmt.Fprintf(w, "  describe:     %s describe <camera> --nats %s\n\n", self, natsURL)
}

// dialable is host:port as a client here reaches it: a server listening
// on every address (0.0.0.0, [::], no host) is shown as 127.0.0.1, which
// it answers too (Go's [::] listener takes IPv4) and a browser opens.
func dialable(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return hostport
}
