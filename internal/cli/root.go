// Package cli is the patchline command line.
package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"gocv.io/x/gocv"

	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/ort"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=...".
var Version = "dev"

// Main runs the command line and returns the exit code.
func Main(args []string) int {
	ctx, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	defer watchSignals(stop)()
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(output{os.Stdout, stop})
	root.SetErr(output{os.Stderr, stop})
	if err := root.ExecuteContext(ctx); err != nil {
		var ue *usageError
		switch {
		case errors.As(err, &ue):
			fmt.Fprintf(os.Stderr, "%v\nRun '%s --help' for usage.\n", err, ue.cmd.CommandPath())
			return 2
		case strings.HasPrefix(err.Error(), "unknown command"): // cobra's
			fmt.Fprintf(os.Stderr, "patchline: %v\nRun '%s --help' for usage.\n", err, root.CommandPath())
			return 2
		}
		fmt.Fprintln(os.Stderr, "patchline:", err)
		return 1
	}
	if context.Cause(ctx) == errOutputClosed {
		return 1 // stopped for it: what was written since is lost
	}
	return 0
}

// watchSignals stops patchline, through stop, at the first of stopSignals,
// with the cause "<signal> signal received" (the stop's log says why); a
// second while the stop is under way (a camera's open or read may hold it
// up to decode.stall_timeout) exits at once. It returns the func that stops
// watching. One goroutine sees every stop signal, in order: none is lost
// to another's handler.
//
// SIGPIPE is asked for too, and dropped: else Go's runtime kills a program
// at once when it writes to a closed pipe on standard output or error, so
// `patchline run 2>&1 | tee run.log`, whose tee a Ctrl-C ends first, died
// as it logged the stop, losing what a stop saves (annotations on their way
// to the sink's outputs, the leases decode hands back, the embedded
// server's clean close). The write fails instead (see output).
func watchSignals(stop context.CancelCauseFunc) (unwatch func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, stopSignals...)
	// Its own channel: a burst of failed writes must not fill the one for
	// stop signals, which would then drop one.
	pipes := make(chan os.Signal, 1)
	signal.Notify(pipes, syscall.SIGPIPE)
	returned := make(chan struct{})
	go func() {
		signaled := false
		for {
			select {
			case s := <-sigs:
				if !signaled {
					signaled = true
					stop(errors.New(s.String() + " signal received"))
					continue
				}
				fmt.Fprintf(os.Stderr, "patchline: %v again: exiting now, without finishing the stop\n", s)
				os.Exit(1)
			case <-pipes:
				// A write to a closed pipe or socket: it fails with EPIPE.
			case <-returned:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		signal.Stop(pipes)
		close(returned)
	}
}

// errOutputClosed is why patchline stops when a write to its standard
// output or error finds the pipe's (or socket's) reader gone.
var errOutputClosed = errors.New("standard output or error closed")

// output is standard output or error, where commands print and the log
// goes. A write that finds its reader gone (EPIPE: `patchline watch | head`,
// a log collector that went away) stops patchline cleanly, through stop,
// with errOutputClosed, and Main exits 1. A closed pipe nothing is written
// to changes nothing.
type output struct {
	f    *os.File
	stop context.CancelCauseFunc
}

func (o output) Write(p []byte) (int, error) {
	n, err := o.f.Write(p)
	if errors.Is(err, syscall.EPIPE) {
		o.stop(errOutputClosed)
	}
	return n, err
}

// stopSignals stop patchline cleanly: SIGHUP too, which a closing terminal
// or SSH session sends, and which would otherwise end the process at once.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// usageError is a command used wrongly (its arguments or flags), as
// opposed to one that failed: Main exits 2 for it, with a pointer to the
// command's help.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string { return e.cmd.CommandPath() + ": " + e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usage makes err, a bad argument or flag (or flag value) of cmd, a usage
// error.
func usage(cmd *cobra.Command, err error) error { return &usageError{cmd: cmd, err: err} }

// usageArgs makes cmd's argument errors (and its subcommands') usage
// errors; a configuration file given as an argument gets a hint to use -c.
func usageArgs(cmd *cobra.Command) {
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error {
			err := args(c, a)
			if err == nil {
				return nil
			}
			if !c.HasSubCommands() && len(a) > 0 && strings.HasPrefix(err.Error(), "unknown command") { // cobra.NoArgs
				err = fmt.Errorf("takes no arguments, got %q", a[0])
			}
			if c.Flags().Lookup("config") != nil && len(a) > 0 && (strings.HasSuffix(a[0], ".yaml") || strings.HasSuffix(a[0], ".yml")) {
				err = fmt.Errorf("%w (the configuration file goes after -c: %s -c %s)", err, c.CommandPath(), a[0])
			}
			return usage(c, err)
		}
	}
	for _, sub := range cmd.Commands() {
		usageArgs(sub)
	}
}

type globals struct {
	logLevel, logFormat string // flags; "" leaves them to the config's log section
	logTo               io.Writer
}

func newRoot() *cobra.Command {
	g := &globals{logTo: os.Stderr}
	root := &cobra.Command{
		Use:           "patchline",
		Short:         "Streaming video analysis: cameras → OpenCV → ViT patch tokens on NATS → ONNX Runtime → annotations",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.logTo = cmd.ErrOrStderr() // stderr, or where a test puts it
			// Bad log flags are an error whatever the command.
			if _, err := g.logger(config.Default().Log); err != nil {
				return usage(cmd, err)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(usage)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "", "log level: debug, info, warn, error (default log.level, info)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "", "log format: text (logfmt) or json (default log.format, text)")
	root.AddCommand(
		newRunCmd(g), newStageCmd(g),
		newAttachCmd(), newDetachCmd(), newCamerasCmd(),
		newWatchCmd(), newDescribeCmd(), newValidateCmd(), newSynthCmd(), newVersionCmd(),
	)
	usageArgs(root)
	return root
}

// logger is the stderr logger of the flags, over c (the config's log
// section; config.Default's before a config is read).
func (g *globals) logger(c config.Log) (*slog.Logger, error) {
	level, format := cmp.Or(g.logLevel, c.Level), cmp.Or(g.logFormat, c.Format)
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil || !slices.Contains(config.LogLevels, level) {
		return nil, fmt.Errorf("--log-level %q: want one of %s", level, strings.Join(config.LogLevels, ", "))
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(g.logTo, opts)), nil
	case "json":
		// Durations as the text format writes them ("20ms"), not as
		// JSON's nanosecond integers.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(g.logTo, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want one of %s", format, strings.Join(config.LogFormats, ", "))
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
