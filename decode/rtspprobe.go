package decode

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"
)

// probeRTSP checks, before OpenCV opens uri, that its server answers: it
// connects and, for rtsp://, sends OPTIONS and reads the status line, all
// within timeout in all, or until ctx ends. OpenCV opens one capture at a time process-wide (a lock
// in its FFmpeg backend), so an open to a host that never answers (gone
// from the network, or accepting connections but silent) would hold up
// every other camera's open for the whole timeout, again at each retry;
// the probe waits without that lock. Any RTSP answer will do, 401
// included: the credentials go in OpenCV's own requests, never in the
// probe's. rtsps:// is only connected to: its answer would take a TLS
// handshake of the probe's own.
func probeRTSP(ctx context.Context, uri string, timeout time.Duration) error {
	u, err := url.Parse(uri)
	if err != nil {
		return errors.New("the URL does not parse")
	}
	addr := u.Host
	if u.Port() == "" {
		port := "554"
		if u.Scheme == "rtsps" {
			port = "322"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	if timeout <= 0 {
		timeout = 30 * time.Second // OpenCV's own open timeout
	}
	deadline := time.Now().Add(timeout) // for the whole probe
	conn, err := (&net.Dialer{Deadline: deadline}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() }) // the camera stopping
	defer stop()
	if u.Scheme != "rtsp" {
		return nil
	}
	_ = conn.SetDeadline(deadline)
	target := *u
	target.User = nil
	if _, err := fmt.Fprintf(conn, "OPTIONS %s RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: patchline\r\n\r\n", target.String()); err != nil {
		return err
	}
	line, err := bufio.NewReaderSize(conn, 512).ReadSlice('\n') // a status line, not whatever the server sends
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("connected to %s, but no RTSP answer within %s", addr, timeout)
	case len(line) == 0 && err != nil:
		return fmt.Errorf("connected to %s, but it closed without an RTSP answer: %w", addr, err)
	case !bytes.HasPrefix(line, []byte("RTSP/")):
		return fmt.Errorf("%s is not an RTSP server (it answered %.40q)", addr, line)
	}
	return nil
}
