package cli

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/patchline/patchline/internal/bus"
	"github.com/patchline/patchline/internal/config"
	"github.com/patchline/patchline/internal/frame"
	"github.com/patchline/patchline/internal/media"
)

const defaultAPI = "http://127.0.0.1:8080"

// apiDefault is --api's default: the address $PATCHLINE_HTTP_ADDR gives
// the server (http.addr; an unspecified host is this machine), else
// defaultAPI.
func apiDefault() string {
	addr := os.Getenv("PATCHLINE_HTTP_ADDR")
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return defaultAPI
	}
	u := url.URL{Scheme: "http", Host: dialable(addr)} // a zone's % escaped: [fe80::1%25eth0]
	return u.String()
}

// apiFlag defines --api, the patchline HTTP API, on cmd.
func apiFlag(cmd *cobra.Command, api *string) {
	cmd.Flags().StringVar(api, "api", apiDefault(), "patchline HTTP API (default from $PATCHLINE_HTTP_ADDR when set; the token in $"+tokenEnv+" when set)")
}

// natsFlag defines --nats, the NATS server, on cmd.
func natsFlag(cmd *cobra.Command, url *string) {
	cmd.Flags().StringVar(url, "nats", natsDefault(), "NATS server URL (default from $PATCHLINE_NATS_URL when set; the token in $"+natsTokenEnv+" when set)")
}

// natsDefault is --nats's default: $PATCHLINE_NATS_URL (nats.url) when
// set, else the embedded server's default address.
func natsDefault() string {
	return cmp.Or(os.Getenv("PATCHLINE_NATS_URL"), "nats://127.0.0.1:4222")
}

// tokenEnv holds the API's bearer token (http.token) for attach, detach and
// cameras; it is also the variable that sets http.token.
const tokenEnv = "PATCHLINE_HTTP_TOKEN"

// natsTokenEnv holds the NATS token (nats.token) for watch and describe;
// it is also the variable that sets nats.token.
const natsTokenEnv = "PATCHLINE_NATS_TOKEN"

// natsConnect connects a command named name to url, sending the token in
// $PATCHLINE_NATS_TOKEN when set, with a hint in the error for what
// usually went wrong: no server there, or its token.
func natsConnect(url, name string, more ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.Name(name)}, more...)
	if tok := os.Getenv(natsTokenEnv); tok != "" {
		opts = append(opts, nats.Token(tok))
	}
	nc, err := nats.Connect(url, opts...)
	shown := bus.RedactURLs(url)
	switch {
	case errors.Is(err, nats.ErrAuthorization) && os.Getenv(natsTokenEnv) == "":
		return nil, fmt.Errorf("connect %s: %w (set $%s to the server's nats.token)", shown, err, natsTokenEnv)
	case errors.Is(err, nats.ErrAuthorization):
		return nil, fmt.Errorf("connect %s: %w ($%s is not the server's nats.token)", shown, err, natsTokenEnv)
	case err != nil:
		return nil, fmt.Errorf("connect %s: %w (is patchline running? see --nats)", shown, err)
	}
	return nc, nil
}

// apiURL is the URL of path under the API at api (--api), with each of
// elems (a camera id) escaped as one path segment.
func apiURL(api, path string, elems ...string) (string, error) {
	u, err := url.Parse(api)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("--api %s: want the patchline HTTP API's URL, such as %s (the token goes in $%s)", media.RedactURL(api), defaultAPI, tokenEnv)
	}
	segs := []string{path}
	for _, e := range elems {
		segs = append(segs, url.PathEscape(e)) // JoinPath takes escaped segments
	}
	return u.JoinPath(segs...).String(), nil
}

// The timeout covers the registry waiting out a JetStream leader election
// (ingest.unavailableWait).
var httpClient = &http.Client{Timeout: 30 * time.Second}

// apiCall sends a JSON request to the camera API and decodes the reply into out.
func apiCall(method, target string, body any, out any) error {
	shown := media.RedactURL(target)
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok := os.Getenv(tokenEnv); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			ue.URL = shown // it quotes the URL, hiding a password but not a token given as the user
		}
		return fmt.Errorf("patchline API at %s: %w (is `patchline run` running? see --api)", shown, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		msg := fmt.Sprintf("%s %s: %s", method, shown, resp.Status)
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if resp.StatusCode == http.StatusUnauthorized {
			if os.Getenv(tokenEnv) == "" {
				msg += " (set $" + tokenEnv + " to the server's http.token)"
			} else {
				msg += " ($" + tokenEnv + " is not the server's http.token)"
			}
		}
		return errors.New(msg)
	}
	// Another server on the port answers anything with 200: only
	// patchline's JSON (or a detach's 204) counts.
	notOurs := fmt.Errorf("%s %s: %s with %q is not patchline's answer (is --api a patchline server?)", method, shown, resp.Status, resp.Header.Get("Content-Type"))
	if out == nil {
		if resp.StatusCode != http.StatusNoContent {
			return notOurs
		}
		return nil
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return notOurs
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, shown, err)
	}
	return nil
}

func newAttachCmd() *cobra.Command {
	var api string
	var c config.Camera
	cmd := &cobra.Command{
		Use:   "attach <camera-id> <url>",
		Short: "Attach a camera at runtime (rtsp://…, a file path or file://…, synthetic://…, whip:// for a WebRTC publisher to POST /whip/<camera-id>)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c.ID, c.URL = args[0], args[1]
			// The server checks the same; here the message is the same
			// for --fps NaN, which JSON cannot carry.
			if err := c.Validate(); err != nil {
				return usage(cmd, fmt.Errorf("attach %s: %w", c.ID, err))
			}
			if isRelativePath(c.URL) && isLoopback(api) { // checked as given: "cam:554/s" stays an error
				// A server on this machine would resolve it against its
				// own directory, not the caller's.
				if abs, err := filepath.Abs(c.URL); err == nil {
					c.URL = abs
				}
			}
			u, err := apiURL(api, "/v1/cameras")
			if err != nil {
				return usage(cmd, err)
			}
			var v cameraView
			if err := apiCall(http.MethodPost, u, c, &v); err != nil {
				return err
			}
			if v.ID != c.ID {
				return fmt.Errorf("%s answered the attach of %s with camera %q: is --api a patchline server?", media.RedactURL(api), c.ID, v.ID)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "attached %s (%s)\n", v.ID, v.URL)
			return nil
		},
	}
	apiFlag(cmd, &api)
	cmd.Flags().Float64Var(&c.FPS, "fps", 0, "target frames per second (0 = decode.default_fps)")
	cmd.Flags().BoolVar(&c.Loop, "loop", false, "loop a file source")
	return cmd
}

// registryKey matches a key the camera registry (a NATS KV bucket) can
// hold, but for '/', which would change the request's path.
var registryKey = regexp.MustCompile(`^[-_=a-zA-Z0-9]+(\.[-_=a-zA-Z0-9]+)*$`)

// isLoopback says whether the API at URL u is on this machine.
func isLoopback(u string) bool {
	p, err := url.Parse(u)
	if err != nil {
		return false
	}
	host := strings.ToLower(strings.TrimSuffix(p.Hostname(), "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	// An unspecified address ([::], 0.0.0.0: what patchline run prints for
	// an http.addr that listens everywhere) is dialled as this machine.
	ip, err := netip.ParseAddr(host)
	ip = ip.Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	return err == nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// isRelativePath says whether a camera URL is a relative file path.
func isRelativePath(u string) bool {
	return u != "" && !strings.Contains(u, "://") && !filepath.IsAbs(u) && !strings.HasPrefix(u, "~")
}

func newDetachCmd() *cobra.Command {
	var api string
	cmd := &cobra.Command{
		Use:   "detach <camera-id>",
		Short: "Detach a camera",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// A bad id would otherwise change the request (detach 'a?b'
			// deletes camera a). A registry key that is no camera id (an
			// entry put by hand, which the log says to remove this way)
			// is taken too.
			if err := frame.ValidCameraID(args[0]); err != nil && !registryKey.MatchString(args[0]) {
				return usage(cmd, fmt.Errorf("detach %q: %w", args[0], err))
			}
			u, err := apiURL(api, "/v1/cameras", args[0])
			if err != nil {
				return usage(cmd, err)
			}
			if err := apiCall(http.MethodDelete, u, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "detached %s\n", args[0])
			return nil
		},
	}
	apiFlag(cmd, &api)
	return cmd
}

type cameraView struct {
	ID     string  `json:"id"`
	URL    string  `json:"url"`
	FPS    float64 `json:"fps"`
	Status *struct {
		State         string  `json:"state"`
		LastError     string  `json:"last_error"`
		FPS           float64 `json:"fps"`
		FramesOut     uint64  `json:"frames_out"`
		FramesDropped uint64  `json:"frames_dropped"`
		Reconnects    uint64  `json:"reconnects"`
	} `json:"status"`
}

func newCamerasCmd() *cobra.Command {
	var api string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "cameras",
		Short: "List cameras with state, fps, drops and last error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := apiURL(api, "/v1/cameras")
			if err != nil {
				return usage(cmd, err)
			}
			var raw json.RawMessage
			if err := apiCall(http.MethodGet, u, nil, &raw); err != nil {
				return err
			}
			if asJSON {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), string(raw))
				return err
			}
			var cams []cameraView
			if err := json.Unmarshal(raw, &cams); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tFPS\tFRAMES\tDROPPED\tRECONNECTS\tURL\tLAST ERROR")
			for _, c := range cams {
				if c.Status == nil {
					fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t%s\t\n", c.ID, "pending", c.URL)
					continue
				}
				s := c.Status
				fmt.Fprintf(tw, "%s\t%s\t%.1f\t%d\t%d\t%d\t%s\t%s\n", c.ID, s.State, s.FPS, s.FramesOut, s.FramesDropped, s.Reconnects, c.URL, s.LastError)
			}
			return tw.Flush()
		},
	}
	apiFlag(cmd, &api)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	return cmd
}
