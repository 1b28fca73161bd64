// Package cli is the patchline command line.
package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"gocv.io/x/gocv"

	"github.com/patchline/patchline/internal/ort"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=...".
var Version = "dev"

// Main runs the command line and returns the exit code.
func Main(args []string) int {
	root := newRoot()
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "patchline:", err)
		return 1
	}
	return 0
}

type globals struct {
	logLevel string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "patchline",
		Short:         "Streaming video analysis: cameras → OpenCV → ViT patch tokens on NATS → ONNX Runtime → annotations",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		newRunCmd(g), newStageCmd(g),
		newAttachCmd(), newDetachCmd(), newCamerasCmd(),
		newWatchCmd(), newDescribeCmd(), newValidateCmd(), newSynthCmd(), newVersionCmd(),
	)
	return root
}

func (g *globals) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), versionLine())
		},
	}
}

// versionLine is the version with what the binary was built from (the
// commit, and whether the tree had changes; Go), the OpenCV it links, and
// the ONNX Runtime it would load (or why it cannot).
func versionLine() string {
	v := "patchline " + Version
	var extra []string
	if bi, ok := debug.ReadBuildInfo(); ok {
		vcs := map[string]string{}
		for _, s := range bi.Settings {
			vcs[s.Key] = s.Value
		}
		if rev := vcs["vcs.revision"]; rev != "" {
			c := "commit " + rev[:min(12, len(rev))]
			if t := vcs["vcs.time"]; t != "" {
				c += " " + t
			}
			if vcs["vcs.modified"] == "true" {
				c += " (modified)"
			}
			extra = append(extra, c)
		}
		extra = append(extra, bi.GoVersion)
	}
	extra = append(extra, "OpenCV "+gocv.OpenCVVersion(), ortVersion())
	return v + " (" + strings.Join(extra, ", ") + ")"
}

// ortVersion loads ONNX Runtime as the stages do ($PATCHLINE_ORT_LIB, else
// the copy in .cache) and names its version and file, or says why not.
func ortVersion() string {
	lib, err := ort.ResolveLibrary("")
	if err == nil {
		err = ort.Init(lib)
	}
	if err != nil {
		return fmt.Sprintf("ONNX Runtime %s not loaded: %v", ort.Version, err)
	}
	return fmt.Sprintf("ONNX Runtime %s from %s", ort.RuntimeVersion(), lib)
}
