// Package rtsptest runs real RTSP infrastructure for tests: a relay server
// built on gortsplib (a publisher ANNOUNCEs and RECORDs a stream at a path,
// readers DESCRIBE, SETUP and PLAY it over TCP or UDP), an ffmpeg helper that
// makes short H.264 clips, and an ffmpeg publisher that loops a clip into the
// server in real time.
package rtsptest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"
)

// Config configures a Server.
type Config struct {
	// User and Pass, when User is set, are required from publishers
	// (ANNOUNCE) and readers (DESCRIBE, SETUP).
	User, Pass string
	// Logf, when set, receives a line per server event (e.g. t.Logf).
	Logf func(format string, args ...any)
}

// Server is an RTSP relay listening on 127.0.0.1 at a free port.
type Server struct {
	cfg  Config
	srv  *gortsplib.Server
	addr string

	mu    sync.Mutex
	paths map[string]*path
}

type path struct {
	stream    *gortsplib.ServerStream
	publisher *gortsplib.ServerSession
	packets   uint64
	plays     int
	frozen    bool
}

// Start runs a server without credentials until the test ends.
func Start(t testing.TB) *Server { return StartWith(t, Config{}) }

// StartWith runs a server configured by cfg until the test ends.
func StartWith(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a server; Close stops it.
func New(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, paths: map[string]*path{}}
	var once sync.Once
	s.srv = &gortsplib.Server{
		Handler:     (*handler)(s),
		RTSPAddress: "127.0.0.1:0",
		// Capture the listener to learn the port the kernel picked.
		Listen: func(network, address string) (net.Listener, error) {
			l, err := net.Listen(network, address)
			if err == nil {
				once.Do(func() { s.addr = l.Addr().String() })
			}
			return l, err
		},
	}
	if err := s.srv.Start(); err != nil {
		return nil, fmt.Errorf("rtsptest: start server: %w", err)
	}
	if s.addr == "" {
		s.srv.Close()
		return nil, fmt.Errorf("rtsptest: server did not report its address")
	}
	return s, nil
}

// Close stops the server, disconnecting every publisher and reader.
func (s *Server) Close() {
	s.srv.Close()
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// URL is the rtsp:// URL of a stream path, without credentials.
func (s *Server) URL(p string) string {
	return "rtsp://" + s.addr + "/" + strings.TrimPrefix(p, "/")
}

// AuthURL is URL with the configured credentials as userinfo.
func (s *Server) AuthURL(p string) string {
	if s.cfg.User == "" {
		return s.URL(p)
	}
	u := &url.URL{Scheme: "rtsp", User: url.UserPassword(s.cfg.User, s.cfg.Pass), Host: s.addr, Path: "/" + strings.TrimPrefix(p, "/")}
	return u.String()
}

// Packets is the number of RTP packets received for a path so far.
func (s *Server) Packets(p string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.paths[norm(p)]; st != nil {
		return st.packets
	}
	return 0
}

// Plays is the number of PLAY requests the streams of paths have answered
// together: each is a reader (a camera opening it, or Publish's own check)
// beginning to read.
func (s *Server) Plays(paths ...string) (n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range paths {
		if st := s.paths[norm(p)]; st != nil {
			n += st.plays
		}
	}
	return n
}

// HasStream reports whether a publisher is recording at path and has sent
// at least one RTP packet.
func (s *Server) HasStream(p string) bool { return s.Packets(p) > 0 }

// WaitStream waits until HasStream(p) or ctx is done.
func (s *Server) WaitStream(ctx context.Context, p string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !s.HasStream(p) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("rtsptest: no stream at %q: %w", p, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Freeze stops (true) or resumes (false) relaying a path's packets to
// readers while keeping every connection open: readers see a stalled
// stream, not a closed one.
func (s *Server) Freeze(p string, frozen bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.paths[norm(p)]; st != nil {
		st.frozen = frozen
	}
}

// DropPublisher closes the session publishing at path (readers are
// disconnected too). The publisher may ANNOUNCE again.
func (s *Server) DropPublisher(p string) {
	s.mu.Lock()
	st := s.paths[norm(p)]
	s.mu.Unlock()
	if st != nil && st.publisher != nil {
		st.publisher.Close()
	}
}

func norm(p string) string { return strings.Trim(p, "/") }

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf("rtsptest: "+format, args...)
	}
}

func (s *Server) authorized(c *gortsplib.ServerConn, req *base.Request) bool {
	return s.cfg.User == "" || c.VerifyCredentials(req, s.cfg.User, s.cfg.Pass)
}

// handler implements gortsplib's ServerHandler interfaces.
type handler Server

func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s := (*Server)(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, st := range s.paths {
		if st.publisher == ctx.Session {
			st.stream.Close()
			delete(s.paths, name)
			s.logf("publisher of %q left (%v)", name, ctx.Error)
		}
	}
}

func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s := (*Server)(h)
	if !s.authorized(ctx.Conn, ctx.Request) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, nil, liberrors.ErrServerAuth{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.paths[norm(ctx.Path)]
	if st == nil {
		s.logf("DESCRIBE %q: not found", ctx.Path)
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, st.stream, nil
}

func (h *handler) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	s := (*Server)(h)
	if !s.authorized(ctx.Conn, ctx.Request) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := norm(ctx.Path)
	if old := s.paths[name]; old != nil {
		old.stream.Close()
		old.publisher.Close()
	}
	stream := &gortsplib.ServerStream{Server: s.srv, Desc: ctx.Description}
	if err := stream.Initialize(); err != nil {
		return &base.Response{StatusCode: base.StatusInternalServerError}, fmt.Errorf("rtsptest: stream: %w", err)
	}
	s.paths[name] = &path{stream: stream, publisher: ctx.Session}
	s.logf("ANNOUNCE %q", name)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s := (*Server)(h)
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord {
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	if !s.authorized(ctx.Conn, ctx.Request) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, nil, liberrors.ErrServerAuth{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.paths[norm(ctx.Path)]
	if st == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, st.stream, nil
}

func (h *handler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	s := (*Server)(h)
	s.logf("PLAY %q", ctx.Path)
	s.mu.Lock()
	if st := s.paths[norm(ctx.Path)]; st != nil {
		st.plays++
	}
	s.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *handler) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	s := (*Server)(h)
	name := norm(ctx.Path)
	s.mu.Lock()
	st := s.paths[name]
	s.mu.Unlock()
	if st == nil || st.publisher != ctx.Session {
		return &base.Response{StatusCode: base.StatusBadRequest}, fmt.Errorf("rtsptest: RECORD %q without ANNOUNCE", name)
	}
	ctx.Session.OnPacketRTPAny(func(medi *description.Media, _ format.Format, pkt *rtp.Packet) {
		s.mu.Lock()
		st.packets++
		frozen := st.frozen
		s.mu.Unlock()
		if frozen {
			return
		}
		if err := st.stream.WritePacketRTP(medi, pkt); err != nil {
			s.logf("relay %q: %v", name, err)
		}
	})
	s.logf("RECORD %q", name)
	return &base.Response{StatusCode: base.StatusOK}, nil
}
